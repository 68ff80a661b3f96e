"""Clocks move (NTP steps, restored VMs): ids keep creation order, whatever the wall clock does.

The audit: after the clock went back an hour, new ids sorted before older ones, every
rescan made another job for an unchanged file, and `show clip.mp4` returned the job of
the older content. Ids now never fall below a floor the store persists; "newest job for
an input" is the newest by creation order.

The real-daemon test moves the clock of a running daemon with libfaketime (Debian package
`faketime`): FAKETIME_TIMESTAMP_FILE is re-read while the process runs.
"""

from __future__ import annotations

import glob
import hashlib
import os
import time

import pytest

from forgesyte.storage import ids as ids_module
from forgesyte.storage.ids import JobIds
from forgesyte.storage.jobs import JobStore
from tests.conftest import wait_until

HOUR_NS = 3600 * 10**9


def test_ids_never_fall_below_the_floor_when_the_clock_steps_back(monkeypatch):
    now = [time.time_ns()]
    monkeypatch.setattr(ids_module.time, "time_ns", lambda: now[0])
    ids = JobIds()
    first = [ids.new() for _ in range(50)]
    now[0] -= HOUR_NS
    later = [ids.new() for _ in range(50)]
    assert first + later == sorted(first + later) and len(set(first + later)) == 100
    now[0] += 2 * HOUR_NS  # and forward again: time-ordered as before
    assert ids.new() > later[-1]
    assert JobIds(later[-1]).new() > later[-1]  # a floor handed in at open holds as well


def test_the_store_persists_its_floor(tmp_path, monkeypatch):
    now = [time.time_ns()]
    monkeypatch.setattr(ids_module.time, "time_ns", lambda: now[0])
    store = JobStore(tmp_path)
    old = store.create("a.mp4", size=1, mtime_ns=1, sha256="a" * 64, plugins=["metadata"])
    store.close()
    now[0] -= HOUR_NS  # the machine restarts with its clock an hour behind
    store = JobStore(tmp_path)
    new = store.create("a.mp4", size=2, mtime_ns=2, sha256="b" * 64, plugins=["metadata"])
    assert new["id"] > old["id"]
    assert store.latest_for_input("a.mp4")["id"] == new["id"]
    store.close()
    assert JobStore(tmp_path, readonly=True).resolve("a.mp4")["sha256"] == "b" * 64


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    if not found:
        pytest.skip("libfaketime is not installed (Debian package `faketime`; `make test` installs it as root)")
    return found[0]


def test_a_running_daemon_whose_clock_steps_back_an_hour(home, videos, tmp_path):
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    home.extra_env.update(LD_PRELOAD=_libfaketime(), FAKETIME_TIMESTAMP_FILE=str(clock),
                          FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
    proc = home.start()
    home.drop(videos["clip.webm"], "a.webm")
    first = home.wait_status("a.webm")

    clock.write_text("-1h\n")  # NTP steps the clock back an hour
    home.drop(videos["clip.webm"], "b.webm").write_bytes(videos["clip.webm"].read_bytes() + b"b")
    b = home.wait_status("b.webm")
    assert b["created_at"] < first["created_at"], "the daemon's clock did not move"
    assert b["id"] > first["id"]

    (home.inbox / "a.webm").write_bytes(videos["clip.webm"].read_bytes() + b"new content")
    sha = hashlib.sha256((home.inbox / "a.webm").read_bytes()).hexdigest()
    second = wait_until(lambda: (j := home.json("show", "a.webm"))["sha256"] == sha and j, 60,
                        "a job for the new content of a.webm")  # the newest by creation order
    assert second["id"] > first["id"]
    home.wait_status(second["id"])

    # The unchanged file is looked at again (touched); with ids out of order this made a
    # new job every time. Wait until the daemon has taken the new mtime, then count.
    mtime = time.time_ns() - 7 * 10**9
    os.utime(home.inbox / "a.webm", ns=(mtime, mtime))
    wait_until(lambda: JobStore(home.state, readonly=True).get(second["id"]).get("mtime_ns") == mtime, 60,
               "the daemon to take the touched file's new mtime")
    assert home.stop(proc) == 0

    home.start()  # restarted, still an hour behind: the floor holds across restarts
    home.drop(videos["clip.webm"], "c.webm").write_bytes(videos["clip.webm"].read_bytes() + b"c")
    c = home.wait_status("c.webm")
    jobs = home.jobs()
    assert sorted(j["input"] for j in jobs) == ["a.webm", "a.webm", "b.webm", "c.webm"]
    assert c["id"] == max(j["id"] for j in jobs)
    assert [j["id"] for j in jobs] == sorted((j["id"] for j in jobs), reverse=True)  # list: newest first
    assert home.json("show", "a.webm")["id"] == second["id"]
