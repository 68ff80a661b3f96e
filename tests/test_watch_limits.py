"""When inotify watches run out, folders without a watch are still covered (issue 9, item 6).

The kernel limit is lowered for the daemon alone: it runs in a user namespace
of its own (`unshare -U -r`) whose /proc/sys/user/max_inotify_watches is set
below the number of inbox folders. inotify counts watches per user and per
user namespace, so the rest of the machine keeps its limit (lowering the
global fs.inotify.max_user_watches would starve every other process of root
for the length of the test). The daemon's own view is real: the kernel
refuses the watches, watchdog drops them silently, and the test reads the
daemon's /proc/<pid>/fdinfo to find a folder that really has no watch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import wait_until

LIMIT = 12
FOLDERS = 40
TAKEN_WITHIN = 45.0  # what the README promises for a new file in an unwatched folder


def _watched_inodes(pid: int) -> set[int]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                for line in fh:
                    if line.startswith("inotify "):
                        fields = dict(p.split(":", 1) for p in line.split()[1:] if ":" in p)
                        found.add(int(fields["ino"], 16))
        except OSError:
            continue
    return found


def _start_limited(home) -> subprocess.Popen:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-U", "-r", "sh", "-c", f"echo {LIMIT} > /proc/sys/user/max_inotify_watches"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot lower the inotify limit in a user namespace here: {probe.stderr.strip()}")
    log = open(home.root / f"daemon-{len(home.procs)}.log", "wb")
    script = (f"echo {LIMIT} > /proc/sys/user/max_inotify_watches && "
              f"exec {sys.executable} -m forgesyte run")
    proc = subprocess.Popen(["unshare", "-U", "-r", "sh", "-c", script], env=home.env(),
                            stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    home.procs.append(proc)
    line = proc.stdout.readline().decode()
    assert "watching" in line, f"daemon did not start: {line!r}\n{home.log_text()}"
    return proc


def test_folders_beyond_the_watch_limit_are_polled(home, videos):
    home.config.write_text("settle_seconds = 0.3\nscan_interval = 3600\nstop_grace = 0.5\nworkers = 1\n")
    for i in range(FOLDERS):
        (home.inbox / f"cam{i:02d}").mkdir(parents=True)
    proc = _start_limited(home)
    wait_until(lambda: "refused inotify watches" in home.log_text(), 40, "the warning about the limit")

    log = home.log_text()
    assert "fs.inotify.max_user_watches" in log and "sysctl -w fs.inotify.max_user_watches=" in log, log
    assert f"and {LIMIT} in this user namespace" in log, log

    # A folder the kernel really did not watch, found from the daemon's side.
    watched = _watched_inodes(proc.pid)
    assert 0 < len(watched) <= LIMIT
    unwatched = [p for p in sorted(home.inbox.iterdir()) if os.stat(p).st_ino not in watched]
    assert unwatched, "every folder is watched: the limit did not bite"
    target = unwatched[-1]

    # A new file there is taken without waiting for the hourly rescan.
    started = time.monotonic()
    (target / "late.mp4").write_bytes(videos["clip.mp4"].read_bytes())
    key = f"{target.name}/late.mp4"
    job = home.wait_status(key, ("pending", "running", "completed"), timeout=TAKEN_WITHIN + 15)
    assert time.monotonic() - started < TAKEN_WITHIN, job
    # So is one in a folder created inside an unwatched folder after the start.
    (target / "new" / "deeper").mkdir(parents=True)
    started = time.monotonic()
    (target / "new" / "deeper" / "later.mp4").write_bytes(videos["clip.mp4"].read_bytes() + b"2")
    home.wait_status(f"{target.name}/new/deeper/later.mp4", ("pending", "running", "completed"),
                     timeout=TAKEN_WITHIN + 15)
    assert time.monotonic() - started < TAKEN_WITHIN

    # doctor reports the condition as the daemon sees it, not only the global sysctl.
    doctor = home.cli("doctor")
    assert "refused inotify watches" in doctor.stdout + doctor.stderr, doctor.stdout + doctor.stderr
    assert home.log_text().count("refused inotify watches") == 1  # one warning, not one per poll
    assert proc.poll() is None
    assert home.stop(proc) == 0


def test_an_inbox_the_kernel_will_not_watch_at_all_is_polled(home, videos, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "LIMIT", 0)
    home.config.write_text("settle_seconds = 0.3\nscan_interval = 3600\nstop_grace = 0.5\nworkers = 1\n"
                           "polling_interval = 1.0\n")
    home.inbox.mkdir(parents=True)
    proc = _start_limited(home)
    wait_until(lambda: "refused to watch the inbox itself" in home.log_text(), 20, "the warning")
    home.drop(videos["clip.mp4"], "cam/late.mp4")
    assert home.wait_status("cam/late.mp4", timeout=TAKEN_WITHIN)["status"] == "completed"
    doctor = home.cli("doctor")
    assert "refused to watch the inbox itself" in doctor.stdout + doctor.stderr
    assert proc.poll() is None
    assert home.stop(proc) == 0
