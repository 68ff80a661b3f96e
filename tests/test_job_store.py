"""The TinyDB job store: contract records, legal transitions only, survives kill -9."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from forgesyte.storage.jobs import IllegalTransition, JobIds, JobNotFound, AmbiguousJob, JobStore

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def make(store, key="cam1/a.mp4", sha="0" * 64):
    return store.create(key, size=10, mtime_ns=1, sha256=sha, plugins=["metadata"])


def test_record_has_contract_fields(tmp_path):
    store = JobStore(tmp_path)
    job = make(store)
    assert set(job) >= {"id", "status", "input", "output", "plugins", "attempts", "progress", "error",
                        "size", "sha256", "duplicate_of", "created_at", "started_at", "finished_at"}
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", job["id"])
    assert ISO_MS.match(job["created_at"]) and job["status"] == "pending"


def test_ids_sort_by_creation_even_within_one_millisecond():
    ids = JobIds()
    made = [ids.new() for _ in range(2000)]
    assert made == sorted(made) and len(set(made)) == len(made)


def test_lifecycle_and_illegal_moves(tmp_path):
    store = JobStore(tmp_path)
    job = make(store)
    with pytest.raises(IllegalTransition):
        store.retry(job["id"])  # pending cannot be retried
    running = store.claim(job["id"])
    assert running["status"] == "running" and running["attempts"] == 1 and ISO_MS.match(running["started_at"])
    done = store.complete(job["id"], "cam1/a.mp4-x/results.json")
    assert done["status"] == "completed" and done["progress"] == 100 and ISO_MS.match(done["finished_at"])
    with pytest.raises(IllegalTransition):
        store.claim(job["id"])
    with pytest.raises(IllegalTransition):
        store.retry(job["id"])  # completed is final

    other = make(store, "b.mp4", "1" * 64)
    store.claim(other["id"])
    store.fail(other["id"], "It broke.")
    again = store.retry(other["id"])
    assert again["status"] == "pending" and again["error"] is None and again["attempts"] == 0


def test_requeue_counts_crashes_not_clean_stops(tmp_path):
    store = JobStore(tmp_path)
    job = make(store)
    store.claim(job["id"])
    assert store.requeue(job["id"], count_attempt=False)["attempts"] == 0
    store.claim(job["id"])
    assert store.requeue(job["id"], count_attempt=True)["attempts"] == 1


def test_resolve_by_id_prefix_and_input(tmp_path):
    store = JobStore(tmp_path)
    a = make(store, "x/a.mp4", "a" * 64)
    b = make(store, "x/a.mp4", "b" * 64)
    assert store.resolve(a["id"])["id"] == a["id"]
    assert store.resolve("x/a.mp4")["id"] == b["id"]  # newest for that input
    # The shortest prefix of b that is not also a prefix of a resolves to b.
    common = next(i for i, (x, y) in enumerate(zip(a["id"], b["id"])) if x != y)
    assert store.resolve(b["id"][: common + 1])["id"] == b["id"]
    with pytest.raises(AmbiguousJob):
        store.resolve(a["id"][:common])
    with pytest.raises(JobNotFound):
        store.resolve("zzzz-nope")


def test_reopen_rebuilds_indexes(tmp_path):
    store = JobStore(tmp_path)
    a = make(store, "k.mp4", "c" * 64)
    store.close()
    again = JobStore(tmp_path, readonly=True)
    assert again.latest_for_input("k.mp4")["id"] == a["id"]
    assert again.first_with_sha("c" * 64)["id"] == a["id"]
    with pytest.raises(PermissionError):
        make(again, "z.mp4")


WRITER = """
import sys
from forgesyte.storage.jobs import JobStore
store = JobStore(sys.argv[1])
i = 0
while True:
    job = store.create(f"f{i}.mp4", size=i, mtime_ns=i, sha256=f"{i:064x}", plugins=["metadata"])
    store.claim(job["id"])
    store.complete(job["id"], f"f{i}.mp4-{job['id']}/results.json")
    i += 1
    if i == 5:
        print("go", flush=True)
"""


def test_kill_9_during_writes_leaves_a_loadable_store(tmp_path):
    """A real writer process killed at varied instants; the file must always load."""
    for round_no in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"go"
        time.sleep(0.01 * round_no)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open(tmp_path / "jobs.json", "rb") as fh:
            data = json.load(fh)  # never half a document
        store = JobStore(tmp_path, readonly=True)
        jobs = store.all()
        assert len(jobs) == len(data["jobs"]) >= 5
        # Every record is whole: a completed job has its output and finish time.
        for job in jobs:
            if job["status"] == "completed":
                assert job["output"] and job["finished_at"]
