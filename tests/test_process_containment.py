"""No process a plugin starts outlives its job (issue 9, item 3).

A test plugin starts two processes and leaves them running: a plain child
(what ffmpeg or a helper would be) and a grandchild that escaped by a double
fork and setsid (what a daemonising tool does: it leaves the worker's process
group and is re-parented away from the worker). Each writes its pid and
carries a unique marker in its command line, so a recycled pid cannot pass
for it. Both must be dead after the job completes, after a plugin timeout,
after the worker crashes, after a clean stop of the daemon, and after a
kill -9 of the daemon.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import register_test_plugin, wait_until

PLUGIN = r'''
import ctypes, os, subprocess, sys, time

SLEEPER = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(3600)"

class Spawner:
    name = "spawner"

    def run(self, video, ctx):
        mode = os.path.basename(str(video)).split(".")[0]  # complete, timeout, crash, stop, kill9
        folder = os.environ["FORGESYTE_TEST_PIDS"]
        marker = os.environ["FORGESYTE_TEST_MARKER"]
        child = os.path.join(folder, mode + ".child")
        grandchild = os.path.join(folder, mode + ".grandchild")
        subprocess.Popen([sys.executable, "-c", SLEEPER, child, marker])
        pid = os.fork()
        if pid == 0:  # double fork + setsid: a new session, then an orphan
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", SLEEPER, grandchild, marker])
            os._exit(0)
        os.waitpid(pid, 0)
        while not (os.path.exists(child) and os.path.exists(grandchild)):
            time.sleep(0.01)
        open(os.path.join(folder, mode + ".started"), "w").close()
        if mode == "crash":
            ctypes.string_at(0)  # SIGSEGV: the worker dies
        if mode == "complete":
            return {"spawned": 2}
        while True:  # timeout, stop, kill9: still running when the test acts
            time.sleep(0.1)
'''


def _alive(pid: int, marker: str) -> bool:
    """Running (not a zombie) and still the process we started (its marker in cmdline)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and marker.encode() in cmdline


def install_spawner(home, folder: Path) -> tuple[Path, str]:
    """The spawner plugin, registered for `home` (files under `folder`): the folder its
    processes write their pids into, and the marker in their command lines."""
    (folder / "plugin").mkdir()
    (folder / "plugin" / "spawner_plugin.py").write_text(PLUGIN)
    register_test_plugin(home, folder / "plugin", "spawner", "spawner_plugin:Spawner")
    pids = folder / "pids"
    pids.mkdir()
    marker = f"forgesyte-containment-{uuid.uuid4().hex}"
    home.extra_env.update(FORGESYTE_TEST_PIDS=str(pids), FORGESYTE_TEST_MARKER=marker)
    return pids, marker


def kill_leftovers(pids: Path, marker: str) -> None:
    """Whatever a test's outcome, leave none of the spawner's processes on the machine."""
    for pidfile in pids.glob("*child"):
        pid = int(pidfile.read_text())
        if _alive(pid, marker):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def spawner(home, tmp_path):
    if not os.path.exists("/proc/self/task"):
        pytest.skip("needs Linux /proc (the worker finds its descendants there)")
    pids, marker = install_spawner(home, tmp_path)
    home.config.write_text(
        "settle_seconds = 0.3\nscan_interval = 60\nstop_grace = 0.5\nplugin_timeout = 4\n"
        'plugins = ["spawner"]\nworkers = 2\n')
    yield pids, marker
    kill_leftovers(pids, marker)


def _start_job(home, videos, pids: Path, mode: str) -> tuple[int, int]:
    (home.inbox / f"{mode}.mp4").write_bytes(videos["clip.mp4"].read_bytes() + mode.encode())  # not a duplicate
    wait_until(lambda: (pids / f"{mode}.started").exists(), 60, f"the {mode} plugin to spawn")
    return int((pids / f"{mode}.child").read_text()), int((pids / f"{mode}.grandchild").read_text())


def _assert_dead(pids: tuple[int, int], marker: str, when: str) -> None:
    for pid, what in zip(pids, ("child", "setsid grandchild")):
        wait_until(lambda pid=pid: not _alive(pid, marker), 15, f"the plugin's {what} ({pid}) to die {when}")


def test_children_die_when_the_job_completes_times_out_or_crashes(home, videos, spawner):
    pids, marker = spawner
    proc = home.start()
    done = _start_job(home, videos, pids, "complete")
    assert home.wait_status("complete.mp4")["status"] == "completed"
    _assert_dead(done, marker, "after the job completed")

    hung = _start_job(home, videos, pids, "timeout")
    assert all(_alive(pid, marker) for pid in hung)  # really running while the plugin runs
    job = home.wait_status("timeout.mp4", timeout=60)
    assert job["status"] == "failed" and "did not finish within 4 s" in job["error"], job
    _assert_dead(hung, marker, "after the plugin timed out")

    crashed = _start_job(home, videos, pids, "crash")
    job = home.wait_status("crash.mp4", timeout=60)
    assert job["status"] == "failed" and "SIGSEGV" in job["error"], job
    _assert_dead(crashed, marker, "after the worker crashed")
    assert proc.poll() is None
    assert home.stop(proc) == 0


def test_children_die_when_the_daemon_stops_cleanly(home, videos, spawner):
    pids, marker = spawner
    proc = home.start()
    running = _start_job(home, videos, pids, "stop")
    assert home.stop(proc) == 0
    _assert_dead(running, marker, "after a clean stop")
    assert home.json("show", "stop.mp4")["status"] == "pending"  # back to pending, not lost


def test_children_die_when_the_daemon_is_killed(home, videos, spawner):
    pids, marker = spawner
    proc = home.start()
    running = _start_job(home, videos, pids, "kill9")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    _assert_dead(running, marker, "after kill -9 of the daemon")
    # And no worker host or worker of that daemon is left either.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _is_worker_of(int(p), home)]
        if not leftovers:
            break
        time.sleep(0.1)
    assert not leftovers, f"worker processes outlived the daemon: {leftovers}"


def _is_worker_of(pid: int, home) -> bool:
    """A process whose environment names this test's home (our workers inherit it)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return f"FORGESYTE_HOME={home.root}".encode() in environ.split(b"\0")
