"""Jobs on a real Dask cluster: a real `dask scheduler` and real `forgesyte worker`s on 127.0.0.1.

Every process here is real (the scheduler is distributed's own CLI module,
workers and the daemon are `python -m forgesyte`); faults are real too:
kill -9 of a worker mid-job, a plugin that hangs or segfaults, `cancel`,
the scheduler killed and restarted, a share that drops under a worker. As
root, a two-host test puts the worker in a mount namespace of its own where
the shared folder is mounted elsewhere and the daemon's paths do not exist.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Home, wait_until

try:
    import distributed  # noqa: F401

    _MISSING = None
except ImportError as exc:
    _MISSING = str(exc)
if _MISSING is not None:
    # CI must run these tests: a cluster extra that failed to install is a failure there,
    # never a silent skip (CI=true in .ci/run). Elsewhere, a skip that says why.
    _WHY = f"the cluster extra is not installed (pip install '.[cluster]'): {_MISSING}"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set, so the cluster tests must run, but {_WHY}", pytrace=False)
    pytest.skip(_WHY, allow_module_level=True)

from forgesyte import __version__  # noqa: E402
from forgesyte.daemon import clustermarker  # noqa: E402

TEST_PLUGINS = '''
import ctypes, os, time

def _alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False

class Slow:
    """Sleeps FORGESYTE_TEST_SLOW seconds; notes each start/end with its pid, and any overlap:
    an earlier run of the same job whose process is still alive means a job ran twice at once."""
    name = "slow"
    version = "1.0"
    def run(self, video, ctx):
        folder = os.environ["FORGESYTE_TEST_RUNS"]
        for name in os.listdir(folder):
            job, kind, pid = name.split(".")[:3]
            if job == ctx.job_id and kind == "start" and _alive(int(pid)):
                open(os.path.join(folder, f"{ctx.job_id}.overlap.{os.getpid()}"), "w").close()
        open(os.path.join(folder, f"{ctx.job_id}.start.{os.getpid()}"), "w").close()
        seconds = float(os.environ.get("FORGESYTE_TEST_SLOW", "3"))
        steps = max(1, int(seconds * 10))
        for i in range(steps):
            ctx.progress(i / steps)
            time.sleep(seconds / steps)
        path, _key = ctx.artifact("who.txt")  # an artifact, written last: whose attempt it is
        with open(path, "w") as fh:
            fh.write(str(os.getpid()))
        open(os.path.join(folder, f"{ctx.job_id}.end.{os.getpid()}"), "w").close()
        return {"slept": seconds, "pid": os.getpid()}

class Hang:
    name = "hang"
    version = "1.0"
    def run(self, video, ctx):
        while True:
            time.sleep(1)

class Segfault:
    name = "segv"
    version = "1.0"
    def run(self, video, ctx):
        ctypes.string_at(0)

class Hog:
    name = "hog"
    version = "1.0"
    def run(self, video, ctx):
        hoard = []
        while True:
            hoard.append(bytes(256 * 1024 * 1024))  # calloc: address space, quickly
'''

CONFIG = """
settle_seconds = 0.3
scan_interval = 60
stop_grace = 1
plugin_timeout = 5
retry_backoff = 0.2
max_attempts = 3

[[rules]]
match = "slow/*"
plugins = ["slow"]

[[rules]]
match = "hang/*"
plugins = ["hang"]

[[rules]]
match = "segv/*"
plugins = ["segv"]

[[rules]]
match = "hog/*"
plugins = ["hog"]
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _ancestors(pid: int) -> list[int]:
    found = []
    while pid > 1:
        try:
            pid = int(open(f"/proc/{pid}/stat").read().split(")")[-1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        found.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Cluster:
    """A scheduler on a fixed free port (so it can come back at the same address) and workers."""

    def __init__(self, home: Home, runs: Path):
        self.home = home
        self.runs = runs
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def start_scheduler(self, *args: str, host: str = "127.0.0.1", **config: str) -> None:
        """`args`: more `dask scheduler` options (e.g. --tls-cert); `config`: Dask settings
        for the scheduler, e.g. WORKER_TTL="3s"."""
        log = open(self.home.root / "scheduler.log", "ab")
        env = {**os.environ, **{f"DASK_DISTRIBUTED__SCHEDULER__{k}": v for k, v in config.items()}}
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host,
             "--port", str(self.port), "--no-dashboard", *args],
            stdout=log, stderr=log, env=env, start_new_session=True)
        # Not waited for: the daemon and the workers each wait for it (and must).

    def kill_scheduler(self) -> None:
        self.scheduler.kill()
        self.scheduler.wait(timeout=10)

    def start_daemon(self, *args: str) -> subprocess.Popen:
        return self.home.start("--scheduler", self.address, *args)

    def worker_command(self, nprocs: int = 1) -> list[str]:
        return [sys.executable, "-m", "forgesyte", "worker", "--scheduler", self.address,
                "--nprocs", str(nprocs), "--name", f"w{len(self.workers)}"]

    def start_worker(self, nprocs: int = 1, command: list[str] | None = None,
                     env: dict[str, str] | None = None, ready: bool = True) -> subprocess.Popen:
        log = open(self.home.root / f"worker-{len(self.workers)}.log", "wb")
        proc = subprocess.Popen(command or self.worker_command(nprocs), env=env or self.home.env(),
                                stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        self.workers.append(proc)
        if ready:
            self.ready(proc)
        return proc

    def start_workers(self, count: int) -> list[subprocess.Popen]:
        """Started together (each takes seconds to load), then waited for."""
        procs = [self.start_worker(ready=False) for _ in range(count)]
        for proc in procs:
            self.ready(proc)
        return procs

    def ready(self, proc: subprocess.Popen) -> None:
        line = _readline(proc, 90)
        assert "is running jobs for" in line, f"worker did not start: {line!r}\n{self.logs()}"

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.home.root.glob("*.log")))

    def worker_of(self, pid: int) -> subprocess.Popen:
        """The worker whose chain process `pid` is."""
        chain = set(_ancestors(pid))
        for proc in self.workers:
            if proc.pid in chain:
                return proc
        raise AssertionError(f"no worker is an ancestor of {pid}")

    def notes(self, kind: str) -> list[tuple[str, int]]:
        return [(n.split(".")[0], int(n.split(".")[2])) for n in os.listdir(self.runs) if n.split(".")[1] == kind]

    def close(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().decode(errors="replace") if ready else ""


@pytest.fixture
def cluster(home: Home, tmp_path: Path):
    plugins = tmp_path / "clusterplugins"
    plugins.mkdir()
    (plugins / "cluster_test_plugins.py").write_text(TEST_PLUGINS)
    dist = plugins / "cluster_test_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cluster-test-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[forgesyte.plugins]\nslow = cluster_test_plugins:Slow\nhang = cluster_test_plugins:Hang\n"
        "segv = cluster_test_plugins:Segfault\nhog = cluster_test_plugins:Hog\n")
    home.add_pythonpath(plugins)
    runs = tmp_path / "runs"
    runs.mkdir()
    home.extra_env["FORGESYTE_TEST_RUNS"] = str(runs)
    home.extra_env["FORGESYTE_TEST_SLOW"] = "2.5"
    home.config.write_text(CONFIG)
    c = Cluster(home, runs)
    yield c
    c.close()


def _show(home: Home, ref: str) -> dict | None:
    proc = home.cli("show", ref, "--json")
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _drop(home: Home, videos, name: str) -> None:
    """A distinct copy of the test clip (distinct content: not a duplicate of another drop)."""
    dest = home.inbox / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(videos["clip.mp4"].read_bytes() + name.encode())


def test_jobs_run_on_the_workers_and_the_daemon_records_them(cluster, home, videos):
    cluster.start_scheduler()
    daemon = cluster.start_daemon()
    workers = cluster.start_workers(2)
    for i in range(4):
        _drop(home, videos, f"cam/{i}.mp4")
    jobs = wait_until(lambda: (lambda js: js if len(js) == 4 and all(j["status"] in ("completed", "failed")
                                                                   for j in js) else None)(home.jobs()),
                      90, f"four finished jobs\n{cluster.logs()}")
    for job in jobs:
        assert job["status"] == "completed" and job["attempts"] == 1, job
        document = json.loads((home.output / job["output"]).read_text())  # written by a worker
        assert document["plugins"]["metadata"]["video"]["codec"] == "h264"
        assert document["job"]["status"] == "completed" and document["job"]["id"] == job["id"]
    # Both workers took jobs (two slots of one each, four jobs), and only they did.
    for i in range(2):
        assert "running here" in (home.root / f"worker-{i}.log").read_text(), cluster.logs()
    claims = sorted(os.listdir(home.output / ".forgesyte-cluster" / "claims"))  # one per attempt, settled
    assert claims == sorted(f"{job['id']}.1" for job in jobs), claims
    assert home.stop(daemon) == 0
    for proc in workers:  # a clean stop is exit 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_worker_refuses_folders_or_software_that_are_not_the_daemons(home, tmp_path):
    """Exit 2 and one sentence, before touching the scheduler (none runs here)."""
    home.inbox.mkdir(parents=True)
    home.output.mkdir(parents=True)
    metadata = json.loads(subprocess.run(
        [sys.executable, "-m", "forgesyte", "plugins", "--json"], env=home.env(),
        capture_output=True, text=True, check=True).stdout)
    versions = {p["name"]: p["version"] for p in metadata if p["name"] == "metadata"}

    def worker(*, inbox: Path = home.inbox, output: Path = home.output, extra=()):
        return subprocess.run(
            [sys.executable, "-m", "forgesyte", "--inbox", str(inbox), "--output", str(output),
             "worker", *extra], env=home.env(), capture_output=True, text=True, timeout=120)

    def refused(proc, *phrases):
        assert proc.returncode == 2, (proc.returncode, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        for phrase in phrases:
            assert phrase in proc.stderr, proc.stderr

    addr = ("--scheduler", "tcp://127.0.0.1:9")
    refused(worker(), "needs the scheduler's address")
    refused(worker(extra=addr), "has no ForgeSyte cluster marker")  # never marked: not the daemon's
    refused(worker(output=tmp_path / "nowhere", extra=addr), "does not exist")
    clustermarker.write(home.inbox, home.output, __version__, versions, 60, None)
    other = tmp_path / "other-inbox"
    other.mkdir()
    refused(worker(inbox=other, extra=addr), "is not the daemon's shared inbox")
    marker = clustermarker.marker_path(home.output)
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "version": "0.0.1"}))
    refused(worker(extra=addr), f"runs ForgeSyte {__version__} but the daemon runs 0.0.1")
    marker.write_text(json.dumps({**data, "plugins": {**versions, "nosuch": "2.0"}}))
    refused(worker(extra=addr), "Plugin 'nosuch' is not installed on this worker")
    marker.write_text(json.dumps({**data, "plugins": {"metadata": "0.0-other"}}))
    refused(worker(extra=addr), "Plugin 'metadata' is version", "but 0.0-other on the daemon")


_ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                     max_size=3), max_leaves=8)
_MARKERS = st.fixed_dictionaries({}, optional={
    "cluster": st.sampled_from(["abc", "other"]) | _ANY_JSON, "version": st.just(__version__) | _ANY_JSON,
    "plugins": st.dictionaries(st.text(max_size=5), st.none() | st.text(max_size=5), max_size=3) | _ANY_JSON,
    "plugin_timeout": st.floats(allow_nan=True) | _ANY_JSON, "worker_memory_mb": st.integers() | _ANY_JSON,
})


@settings(max_examples=150, deadline=None)
@given(marker=st.binary(max_size=64) | _MARKERS.map(lambda d: json.dumps(d).encode()) | _ANY_JSON.map(
    lambda v: json.dumps(v).encode()), twin=st.none() | st.binary(max_size=32) | st.sampled_from(
    [b'{"cluster": "abc"}', b'{"cluster": "other"}', b'[]']))
def test_any_marker_content_is_an_identity_or_one_sentence(marker, twin):
    """Whatever the marker files hold (truncated, garbled, wrong types), a worker gets the
    daemon's identity with the right types or NotShared: one sentence, exit 2, never a crash."""
    with tempfile.TemporaryDirectory() as tmp:
        inbox, output = Path(tmp, "inbox"), Path(tmp, "output")
        (output / clustermarker.MARKER_DIR).mkdir(parents=True)
        inbox.mkdir()
        clustermarker.marker_path(output).write_bytes(marker)
        if twin is not None:
            clustermarker.inbox_marker_path(inbox).write_bytes(twin)
        try:
            identity = clustermarker.read(inbox, output)
        except clustermarker.NotShared as exc:
            assert str(exc).endswith(".") and "\n" not in str(exc)
            return
        assert isinstance(identity.cluster, str) and isinstance(identity.version, str)
        assert all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in identity.plugins.items())
        assert identity.plugin_timeout > 0 and (identity.worker_memory_mb is None
                                                or isinstance(identity.worker_memory_mb, int))
        assert json.loads(twin)["cluster"] == identity.cluster


def test_a_share_that_drops_under_a_worker_stops_it_and_the_job_waits(cluster, home, videos, tmp_path):
    """The marker is checked before every job: a worker whose output mount went away
    refuses (exit 2) instead of failing jobs; the job goes back to pending, no attempt used."""
    cluster.start_scheduler()
    daemon = cluster.start_daemon()
    mount = tmp_path / "mnt-output"  # this worker's "mount point" of the output share
    mount.symlink_to(home.output)
    env = {**home.env(), "FORGESYTE_OUTPUT": str(mount)}
    dropper = cluster.start_worker(env=env)
    empty = tmp_path / "empty"
    empty.mkdir()
    mount.unlink()
    mount.symlink_to(empty)  # the share dropped: an empty directory at the mount point
    _drop(home, videos, "a.mp4")
    assert dropper.wait(timeout=60) == 2
    worker_log = (home.root / "worker-0.log").read_text()
    assert "has no ForgeSyte cluster marker" in worker_log and "Traceback" not in worker_log
    job = wait_until(lambda: (lambda j: j if j and j["status"] == "pending" and "refused" in home.log_text()
                              else None)(_show(home, "a.mp4")), 30, "the job to go back to pending")
    assert job["attempts"] == 0 and job["status"] == "pending", job
    cluster.start_worker()  # a worker with the right folders takes it
    job = home.wait_status("a.mp4")
    assert job["status"] == "completed" and job["attempts"] == 1, job
    assert home.stop(daemon) == 0


def test_kill_9_of_a_worker_mid_job_is_the_daemons_decision(cluster, home, videos):
    """Dask re-runs a lost worker's task elsewhere; the re-run finds the attempt's claim and
    reports the worker lost, so the daemon counts an attempt and runs it again itself."""
    cluster.start_scheduler()
    daemon = cluster.start_daemon()
    cluster.start_workers(2)
    _drop(home, videos, "slow/a.mp4")
    first = wait_until(lambda: cluster.notes("start"), 60, "the slow plugin to start")[0][1]
    victim = cluster.worker_of(first)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    job = home.wait_status("slow/a.mp4", timeout=90)
    assert job["status"] == "completed" and job["attempts"] == 2, (job, cluster.logs())
    assert "lost" in home.log_text()
    wait_until(lambda: not _alive(first), 10, "the killed worker's plugin process to die with it")
    starts = cluster.notes("start")
    assert len(starts) == 2 and not cluster.notes("overlap"), starts  # twice, never at once
    assert home.stop(daemon) == 0


def test_a_cut_off_worker_that_finishes_late_changes_nothing(cluster, home, videos):
    """SIGSTOP freezes a worker and its plugin mid-job, as a silent network partition would.
    The scheduler drops the worker (its heartbeats stop), the daemon counts the attempt and
    runs the job elsewhere; when the frozen plugin and worker wake up and finish the stale
    attempt, nothing of it lands: the record, the results document and the artifacts stay
    those of attempt 2 (the stale attempt wrote only into its own staging folder)."""
    cluster.start_scheduler(WORKER_TTL="3s")
    daemon = cluster.start_daemon()
    cluster.start_workers(2)
    _drop(home, videos, "slow/a.mp4")
    first = wait_until(lambda: cluster.notes("start"), 60, "the slow plugin to start")[0][1]
    frozen = cluster.worker_of(first)
    frozen.send_signal(signal.SIGSTOP)
    os.kill(first, signal.SIGSTOP)
    job = home.wait_status("slow/a.mp4", timeout=90)
    assert job["status"] == "completed" and job["attempts"] == 2, (job, cluster.logs())
    log_name = f"worker-{cluster.workers.index(frozen)}.log"
    results = home.output / job["output"]
    folder = job["output"].rsplit("/", 1)[0]
    artifact = home.output / folder / "slow" / "who.txt"
    second = json.loads(results.read_text())["plugins"]["slow"]["pid"]
    assert second != first and artifact.read_text() == str(second)
    assert json.loads(results.read_text())["plugins"]["slow"]["artifacts"] == [f"{folder}/slow/who.txt"]
    # The stale plugin wakes first and finishes its attempt, artifact and document included:
    # both land in attempt 1's staging folder, never in the job's folder.
    os.kill(first, signal.SIGCONT)
    staged = home.output / ".forgesyte-cluster" / "attempts" / f"{job['id']}.1" / folder
    wait_until(lambda: first in [pid for _, pid in cluster.notes("end")], 30, "the stale plugin to finish")
    assert artifact.read_text() == str(second)  # not overwritten by attempt 1
    wait_until(lambda: (staged / "results.staged.json").is_file(), 30, "the stale attempt's document")
    assert (staged / "slow" / "who.txt").read_text() == str(first)
    document = json.loads(results.read_text())
    assert document["job"]["attempts"] == 2 and document["plugins"]["slow"]["pid"] == second
    # Then its worker wakes, learns it was dropped, and rejoins; its outcome is ignored.
    frozen.send_signal(signal.SIGCONT)
    wait_until(lambda: (home.root / log_name).read_text().count("ready: worker") == 2, 60,
               "the woken worker to rejoin the scheduler")
    again = home.json("show", "slow/a.mp4")
    assert (again["status"], again["attempts"], again["finished_at"]) == ("completed", 2, job["finished_at"])
    document = json.loads(home.cli("results", "slow/a.mp4", check=True).stdout)
    assert document["job"]["attempts"] == 2 and document["plugins"]["slow"]["pid"] == second
    assert artifact.read_text() == str(second)
    assert not list((home.output / folder).glob("*.staged.json"))
    assert home.stop(daemon) == 0


def test_hang_segfault_memory_and_cancel_on_the_cluster(cluster, home, videos):
    """Each fails only its job, with the same sentence as local workers; the worker survives.
    The memory limit is the daemon's `worker_memory_mb`, applied to the chain process on the
    worker: without it the hog would allocate until the 5 s timeout, not run out of memory."""
    cluster.start_scheduler()
    home.config.write_text("worker_memory_mb = 3000\n" + CONFIG)
    home.extra_env["FORGESYTE_TEST_SLOW"] = "60"  # cancelled long before: the timeout is 5 s
    daemon = cluster.start_daemon()
    worker = cluster.start_worker(nprocs=2)
    _drop(home, videos, "hang/a.mp4")
    _drop(home, videos, "segv/a.mp4")
    _drop(home, videos, "hog/a.mp4")
    hang = home.wait_status("hang/a.mp4", timeout=60)
    assert hang["error"] == "Plugin 'hang' did not finish within 5 s and was stopped.", hang
    segv = home.wait_status("segv/a.mp4", timeout=60)
    assert segv["error"] == "Plugin 'segv' crashed the worker (killed by SIGSEGV).", segv
    hog = home.wait_status("hog/a.mp4", timeout=60)
    assert (hog["status"], hog["error"]) == ("failed", "Plugin 'hog' ran out of memory."), hog
    assert worker.poll() is None
    _drop(home, videos, "slow/a.mp4")
    home.wait_status("slow/a.mp4", ("running",))
    pid = wait_until(lambda: cluster.notes("start"), 60, "the slow plugin to start")[0][1]
    proc = home.cli("cancel", "slow/a.mp4")
    assert proc.returncode == 0, proc.stderr
    job = home.wait_status("slow/a.mp4", timeout=30)
    assert job["status"] == "failed" and job["error"] == "Cancelled.", job
    wait_until(lambda: not _alive(pid), 15, "the cancelled plugin's process to be killed on the worker")
    _drop(home, videos, "b.mp4")  # the worker still takes jobs
    assert home.wait_status("b.mp4")["status"] == "completed"
    assert worker.poll() is None
    # kill -9 of the daemon: its Dask client vanishes, the scheduler releases its tasks,
    # and the worker kills the plugin it was running for it (no orphan keeps running).
    _drop(home, videos, "slow/c.mp4")
    cancelled = pid
    pid = wait_until(lambda: [p for _, p in cluster.notes("start") if p != cancelled], 60, "a second slow run")[0]
    daemon.kill()
    daemon.wait(timeout=10)
    wait_until(lambda: not _alive(pid), 20, "the worker to stop the dead daemon's job")
    assert worker.poll() is None


def test_scheduler_restart_pauses_dispatch_and_nothing_runs_twice(cluster, home, videos):
    cluster.start_scheduler()
    daemon = cluster.start_daemon()
    worker = cluster.start_worker()
    _drop(home, videos, "slow/a.mp4")
    first = wait_until(lambda: cluster.notes("start"), 60, "the slow plugin to start")[0][1]
    wait_until(lambda: _listening(cluster.port), 30, "the scheduler to listen")
    cluster.kill_scheduler()
    wait_until(lambda: "lost the Dask scheduler" in home.log_text(), 30, "the daemon to notice")
    job = wait_until(lambda: (lambda j: j if j and j["status"] == "pending" else None)(_show(home, "slow/a.mp4")),
                     30, "the interrupted job to go back to pending")
    assert job["attempts"] == 0, job  # the scheduler's fault, not the job's
    wait_until(lambda: not _alive(first), 30, "the worker to stop the job it can no longer report")
    _drop(home, videos, "b.mp4")
    time.sleep(2)  # a while without a scheduler: nothing may run (checked just below)
    assert home.json("show", "b.mp4")["status"] == "pending"
    assert home.log_text().count("lost the Dask scheduler") == 1  # loud, once
    cluster.start_scheduler()
    for key in ("slow/a.mp4", "b.mp4"):
        job = home.wait_status(key, timeout=120)
        assert job["status"] == "completed" and job["attempts"] == 1, (job, cluster.logs())
    assert "is back" in home.log_text()
    assert worker.poll() is None  # the same worker process reconnected
    assert len(cluster.notes("start")) == 2 and not cluster.notes("overlap")
    assert len(cluster.notes("end")) == 1  # the interrupted run never finished
    assert home.stop(daemon) == 0


def _can_unshare() -> str | None:
    if os.geteuid() != 0:
        return "needs root to make mount namespaces"
    if not shutil.which("unshare"):
        return "needs util-linux's unshare"
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return None if proc.returncode == 0 else f"cannot make a mount namespace here: {proc.stderr.decode().strip()}"


@pytest.mark.skipif(_can_unshare() is not None, reason=str(_can_unshare()))
def test_two_hosts_see_the_share_at_different_paths(cluster, home, videos, tmp_path):
    """The worker lives in a mount namespace where the share is mounted at another path and
    the daemon's paths do not exist at all: relative keys need no translation."""
    cluster.start_scheduler()
    home.config.write_text(CONFIG.replace("plugin_timeout = 5", "plugin_timeout = 60"))
    daemon = cluster.start_daemon("--plugins", "metadata,thumbnails")
    host_b = tmp_path / "host-b"
    host_b.mkdir()
    mount = host_b / "mnt" / "videos"
    script = (
        f"set -e; mount -t tmpfs hostb {host_b}; mkdir -p {mount}; mount --bind {home.root} {mount}; "
        f"mount -t tmpfs hidden {home.root}; test ! -e {home.inbox}; "  # the daemon's paths: gone here
        f'exec "$@"'
    )
    env = {**home.env(), "FORGESYTE_HOME": str(mount)}
    env.pop("FORGESYTE_CONFIG")  # the daemon's config file is not on this host
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
               sys.executable, "-m", "forgesyte", "--inbox", f"{mount}/inbox", "--output", f"{mount}/output",
               "worker", "--scheduler", cluster.address, "--nprocs", "1"]
    cluster.start_worker(command=command, env=env)
    _drop(home, videos, "cam1/clip.mp4")
    job = home.wait_status("cam1/clip.mp4", timeout=120)
    assert job["status"] == "completed", (job, cluster.logs())
    document = json.loads(home.cli("results", job["id"], check=True).stdout)
    artifacts = document["plugins"]["thumbnails"]["artifacts"]
    assert artifacts and all(not key.startswith("/") for key in artifacts)
    for key in artifacts:  # written by the worker at its path, found by the daemon at its own
        assert (home.output / key).is_file(), key
    assert str(mount) not in json.dumps(document) and str(home.root) not in json.dumps(document)
    worker_log = (home.root / "worker-0.log").read_text()
    assert f"inbox {mount}/inbox" in worker_log and "running here" in worker_log
    assert home.stop(daemon) == 0


def test_the_accepted_attempt_replaces_an_earlier_attempts_files(tmp_path):
    """A retried job already has a folder: the accepted attempt's files replace its entries,
    the document last; what the attempt did not write stays (as with local workers)."""
    from forgesyte.daemon import clusterstage

    output = tmp_path / "output"
    folder = "cam/2026-01-01/a.mp4-0000000000000000"
    old = output / folder
    (old / "thumbs").mkdir(parents=True)
    (old / "thumbs" / "0.jpg").write_text("old")
    (old / "keep").mkdir()
    (old / "results.json").write_text('{"attempt": 1}')
    store = clusterstage.staged_results(output, "job", 2)
    path, key = store.artifact(folder, "thumbs", "1.jpg")
    path.write_text("new")
    assert key == f"{folder}/thumbs/1.jpg"
    assert store.write(folder, {"attempt": 2}) == f"{folder}/results.json"
    assert json.loads((old / "results.json").read_text()) == {"attempt": 1}  # staged, not in place
    assert clusterstage.publish(output, "job", 2, folder) is True
    assert json.loads((old / "results.json").read_text()) == {"attempt": 2}
    assert sorted(p.name for p in (old / "thumbs").iterdir()) == ["1.jpg"]
    assert (old / "keep").is_dir() and not list(old.glob("*.staged.json"))
    clusterstage.discard(output, "job", 2)
    assert not (output / ".forgesyte-cluster" / "attempts" / "job.2").exists()
    assert not (output / ".forgesyte-cluster" / "trash" / "job.2").exists()
    assert clusterstage.publish(output, "job", 3, folder) is False  # nothing staged: nothing moved


def test_a_worker_that_cannot_join_says_so_once(cluster, home):
    """The scheduler refuses a second worker under a name it already has (a copied unit, a
    restart it has not noticed yet); the worker retries every 2 s. That ongoing condition
    is logged when it starts and when it ends (conditions.py), not once per retry."""
    home.inbox.mkdir(parents=True)
    home.output.mkdir(parents=True)
    clustermarker.write(home.inbox, home.output, __version__, {}, 60, None)
    cluster.start_scheduler()
    first = cluster.start_worker()
    command = cluster.worker_command()
    command[command.index("--name") + 1] = "w0"  # the first worker's name
    second = cluster.start_worker(command=command, ready=False)
    log = home.root / "worker-1.log"
    wait_until(lambda: "could not join the scheduler" in log.read_text(), 90, "the first refusal")
    time.sleep(5)  # nothing to wait for: the retries meanwhile are what must stay silent
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    cluster.ready(second)  # the name is free: it joins
    text = log.read_text()
    assert text.count("could not join the scheduler") == 1, text
    assert text.count("connecting to the Dask scheduler") == 1, text
    assert "name taken" in text and "Unable to connect" not in text, text  # Dask's own line per retry: off
    joined = [line for line in text.splitlines() if "joined the scheduler" in line]
    assert len(joined) == 1 and int(joined[0].split(" after ")[1].split()[0]) >= 2, text
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0


def test_software_that_changes_after_the_worker_started_is_refused_before_the_job(cluster, home, videos, tmp_path):
    """The daemon is upgraded (here: a plugin's version, then SIGHUP) while a worker runs the
    old one: the worker refuses the next job before running it (exit 2, one sentence naming
    the plugin), the job goes back to pending without using an attempt, and a worker with
    the same software takes it."""
    home.extra_env["FORGESYTE_TEST_SLOW"] = "0.2"
    cluster.start_scheduler()
    daemon = cluster.start_daemon()
    old = cluster.start_worker()
    module = tmp_path / "clusterplugins" / "cluster_test_plugins.py"
    module.write_text(module.read_text().replace('name = "slow"\n    version = "1.0"', 'name = "slow"\n    version = "2.0"'))
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: home.log_text().count("marker written") == 2, 60, "the daemon to reload")
    _drop(home, videos, "slow/a.mp4")
    assert old.wait(timeout=60) == 2
    worker_log = (home.root / "worker-0.log").read_text()
    assert "Plugin 'slow' is version 1.0 on this worker but 2.0 on the daemon." in worker_log, worker_log
    assert "Traceback" not in worker_log and not cluster.notes("start")  # refused before running
    job = wait_until(lambda: (lambda j: j if j and j["status"] == "pending" and "refused" in home.log_text()
                              else None)(_show(home, "slow/a.mp4")), 30, "the job to go back to pending")
    assert job["attempts"] == 0, job
    cluster.start_worker()  # upgraded too
    job = home.wait_status("slow/a.mp4", timeout=90)
    assert job["status"] == "completed" and job["attempts"] == 1, (job, cluster.logs())
    assert home.stop(daemon) == 0


# -- TLS, as README "Security" says to set it up -----------------------------------------------

_OPENSSL_CNF = """
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[node]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
"""

# README "Security", verbatim but for the paths.
_README_DISTRIBUTED_YAML = """\
distributed:
  comm:
    require-encryption: true
    tls:
      ca-file: {ca}
      client: {{cert: {cert}, key: {key}}}
      worker: {{cert: {cert}, key: {key}}}
"""


def _make_pki(folder: Path) -> Path:
    """A throwaway cluster CA with certificates it signed for the scheduler and for the nodes
    (daemon and workers), and a stranger: a certificate from a CA of its own. The openssl
    binary makes them (`cryptography`, which Security.temporary needs, is not a dependency)."""
    folder.mkdir()
    (folder / "openssl.cnf").write_text(_OPENSSL_CNF)

    def openssl(*args: str) -> None:
        proc = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr}"

    newkey = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "stranger-ca"):
        openssl("req", "-x509", "-new", "-config", "openssl.cnf", "-extensions", "ca", *newkey,
                "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=forgesyte test {ca}")
    for serial, (name, ca) in enumerate((("scheduler", "ca"), ("node", "ca"), ("stranger", "stranger-ca")), 1):
        openssl("req", "-new", "-config", "openssl.cnf", *newkey, "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-set_serial", str(serial), "-days", "2", "-extfile", "openssl.cnf", "-extensions", "node",
                "-out", f"{name}.pem")
    return folder


def _dask_yaml(folder: Path, ca: Path, cert: Path, key: Path) -> Path:
    """A DASK_CONFIG folder holding the README's distributed.yaml (as /etc/dask would)."""
    folder.mkdir()
    (folder / "distributed.yaml").write_text(_README_DISTRIBUTED_YAML.format(ca=ca, cert=cert, key=key))
    return folder


@pytest.mark.skipif(shutil.which("openssl") is None,
                    reason="needs the openssl binary to make a throwaway CA and certificates")
def test_tls_as_the_readme_documents_it(cluster, home, videos, tmp_path):
    """README "Security": a scheduler started with --tls-ca-file/--tls-cert/--tls-key, tls://
    addresses everywhere, and the certificates given through Dask's configuration with
    require-encryption on: the daemon through DASK_DISTRIBUTED__COMM__... variables, a worker
    through the README's distributed.yaml. A job runs on that worker. A daemon or a worker
    without a certificate stops at start (exit 2, one sentence: bad configuration); a worker
    whose certificate another CA signed fails the handshake, never joins, takes nothing."""
    pki = _make_pki(tmp_path / "pki")
    cluster.address = f"tls://127.0.0.1:{cluster.port}"
    cluster.start_scheduler("--tls-ca-file", str(pki / "ca.pem"), "--tls-cert", str(pki / "scheduler.pem"),
                            "--tls-key", str(pki / "scheduler.key"), host="tls://127.0.0.1")
    plain = {k: v for k, v in home.env().items() if not k.startswith("DASK_")}
    bare = subprocess.run([sys.executable, "-m", "forgesyte", "run", "--scheduler", cluster.address],
                          env=plain, capture_output=True, text=True, timeout=60)
    last = bare.stderr.splitlines()[-1]  # the sentence; "stopped" logged before it
    assert bare.returncode == 2 and "gives this daemon no certificate" in last, bare.stderr
    assert "Traceback" not in bare.stderr, bare.stderr
    home.extra_env.update({
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "true",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(pki / "ca.pem"),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(pki / "node.pem"),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(pki / "node.key"),
        "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT": str(pki / "node.pem"),
        "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY": str(pki / "node.key"),
    })
    daemon = cluster.start_daemon()
    # Started together (each takes seconds to load): no certificate; a stranger's; the cluster's.
    bare = cluster.start_worker(env=plain, ready=False)
    stranger = cluster.start_worker(env={**plain, "DASK_CONFIG": str(_dask_yaml(
        tmp_path / "stranger-dask", pki / "stranger-ca.pem", pki / "stranger.pem", pki / "stranger.key"))},
        ready=False)
    member = cluster.start_worker(env={**plain, "DASK_CONFIG": str(_dask_yaml(
        tmp_path / "dask", pki / "ca.pem", pki / "node.pem", pki / "node.key"))}, ready=False)
    cluster.ready(member)
    bare_log, stranger_log, member_log = (home.root / f"worker-{i}.log" for i in range(3))
    assert bare.wait(timeout=60) == 2, bare_log.read_text()
    text = bare_log.read_text()
    assert "gives this worker no certificate: set distributed.comm.tls.ca-file" in text, text
    assert "Traceback" not in text and "ready: worker" not in text, text
    wait_until(lambda: "TLS handshake failed" in (home.root / "scheduler.log").read_text(), 60,
               "the stranger's handshake to fail at the scheduler")
    wait_until(lambda: "connected to the Dask scheduler" in home.log_text(), 30, "the daemon to connect")
    _drop(home, videos, "a.mp4")
    job = home.wait_status("a.mp4", timeout=90)
    assert job["status"] == "completed" and job["attempts"] == 1, (job, cluster.logs())
    assert "running here" in member_log.read_text(), cluster.logs()
    text = stranger_log.read_text()  # still trying, never joined, took nothing
    assert stranger.poll() is None and "running here" not in text and "ready: worker" not in text, text
    assert not select.select([stranger.stdout], [], [], 0)[0], stranger.stdout.readline()  # no "is running jobs"
    assert home.stop(daemon) == 0


def test_a_tls_file_that_cannot_be_used_is_named_at_start(tmp_path):
    """What `run` and `worker` check before they go near a tls:// scheduler (exit 2)."""
    import dask

    from forgesyte.daemon.clusterworker import tls_problem

    missing, garbled = tmp_path / "node.key", tmp_path / "garbled.pem"
    garbled.write_text("not a certificate\n")
    tls = "distributed.comm.tls"
    assert tls_problem("tcp://127.0.0.1:8786", "worker") is None
    with dask.config.set({f"{tls}.ca-file": str(garbled), f"{tls}.worker.cert": str(garbled),
                          f"{tls}.worker.key": str(missing)}):
        assert tls_problem("tls://127.0.0.1:8786", "worker") == (
            f"The TLS file {missing} (Dask setting {tls}.worker.key) for the scheduler at "
            "tls://127.0.0.1:8786 does not exist or is not readable by this user.")
        assert "gives this daemon no certificate" in tls_problem("tls://127.0.0.1:8786", "client")
    with dask.config.set({f"{tls}.ca-file": str(garbled), f"{tls}.worker.cert": str(garbled),
                          f"{tls}.worker.key": str(garbled)}):
        problem = tls_problem("tls://127.0.0.1:8786", "worker")
        assert problem.startswith("The TLS certificate configured for the Dask scheduler at tls://127.0.0.1:8786 "
                                  "cannot be loaded: ") and problem.endswith("."), problem


# -- No process outlives its job on the cluster either (issue 9, item 3) ------------------------

def test_no_process_a_plugin_starts_outlives_its_job_on_a_cluster_worker(cluster, home, videos, tmp_path):
    """tests/test_process_containment.py's spawner on a `forgesyte worker`: a plain child and a
    double-forked setsid grandchild, both dead once the job completed, and once it timed out."""
    from tests.test_process_containment import _alive as _ours
    from tests.test_process_containment import install_spawner, kill_leftovers

    pids, marker = install_spawner(home, tmp_path)
    home.config.write_text(CONFIG + '\n[[rules]]\nmatch = "spawn/*"\nplugins = ["spawner"]\n')

    def spawned(mode: str) -> tuple[int, int]:
        _drop(home, videos, f"spawn/{mode}.mp4")
        wait_until(lambda: (pids / f"{mode}.started").exists(), 60, f"the {mode} plugin to spawn\n{cluster.logs()}")
        return int((pids / f"{mode}.child").read_text()), int((pids / f"{mode}.grandchild").read_text())

    def dead(both: tuple[int, int], when: str) -> None:
        for pid, what in zip(both, ("child", "setsid grandchild")):
            wait_until(lambda pid=pid: not _ours(pid, marker), 15, f"the plugin's {what} ({pid}) to die {when}")

    try:
        cluster.start_scheduler()
        daemon = cluster.start_daemon()
        worker = cluster.start_worker()
        done = spawned("complete")
        job = home.wait_status("spawn/complete.mp4", timeout=60)
        assert job["status"] == "completed", (job, cluster.logs())
        dead(done, "after the job completed on the worker")

        hung = spawned("timeout")
        for pid in hung:  # really running, on the worker (the grandchild adopted by its subreaper)
            assert _ours(pid, marker) and cluster.worker_of(pid) is worker, pid
        job = home.wait_status("spawn/timeout.mp4", timeout=60)
        assert job["status"] == "failed" and "did not finish within 5 s" in job["error"], job
        dead(hung, "after the plugin timed out on the worker")
        assert worker.poll() is None
        assert "running here" in (home.root / "worker-0.log").read_text()
        assert home.stop(daemon) == 0
    finally:
        kill_leftovers(pids, marker)
