"""kill -9 the daemon at random moments during a 500-file ingest; nothing lost or doubled.

The quick version runs in `make test`; the long one (`-m slow`) does many more
rounds: `make test-all` or `.venv/bin/python -m pytest -m slow tests/test_crash_safety.py`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter

import pytest

from forgesyte.storage.jobs import JobStore
from forgesyte.storage.recovery import inspect
from tests.conftest import wait_until


def all_state_files_load(state):
    """Every state file verifies; a kill leaves at most what the writer repairs by itself
    (a torn journal tail, temp files, files of a checkpoint that never committed)."""
    found = inspect(state)
    assert not found.blocking, [f.sentence() for f in found.findings]


def ingest_with_kills(home, videos, files: int, kills: int, seed: int) -> None:
    # A job running at max_attempts kills fails on purpose (test_intake covers that rule);
    # here every input must complete, so no job may run out of attempts.
    home.config.write_text(home.config.read_text() + f"max_attempts = {kills + 2}\n")
    rng = random.Random(seed)
    data = videos["clip.webm"].read_bytes()
    home.inbox.mkdir(parents=True, exist_ok=True)
    written = 0
    for round_no in range(kills):
        proc = home.start()
        # Keep dropping files while the daemon works, then kill it at a random moment.
        deadline = time.monotonic() + rng.uniform(0.3, 2.5)
        while time.monotonic() < deadline and written < files:
            for _ in range(rng.randint(1, 25)):
                if written < files:
                    (home.inbox / f"d{written % 7}/f{written:04d}.webm").parent.mkdir(exist_ok=True)
                    (home.inbox / f"d{written % 7}/f{written:04d}.webm").write_bytes(data + b"%d" % written)
                    written += 1
            time.sleep(rng.uniform(0, 0.05))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        all_state_files_load(home.state)
        JobStore(home.state, readonly=True).counts()
    while written < files:
        (home.inbox / f"d{written % 7}/f{written:04d}.webm").parent.mkdir(exist_ok=True)
        (home.inbox / f"d{written % 7}/f{written:04d}.webm").write_bytes(data + b"%d" % written)
        written += 1
    proc = home.start()
    wait_until(lambda: home.json("status")["counts"]["completed"] >= files, 300,
               f"{files} completed jobs after {kills} kills", interval=0.5)
    jobs = home.jobs()
    per_input = Counter(j["input"] for j in jobs)
    assert len(per_input) == files, f"{files - len(per_input)} inputs have no job"
    doubled = {k: v for k, v in per_input.items() if v > 1}
    assert not doubled, f"inputs with more than one job: {doubled}"
    assert all(j["status"] == "completed" for j in jobs), Counter(j["status"] for j in jobs)
    # Every completed job's results are where its record says.
    for job in jobs:
        document = json.loads((home.output / job["output"]).read_text())
        assert document["job_id"] == job["id"]
    assert home.stop(proc) == 0


def test_kill_9_during_500_file_ingest_quick(home, videos):
    ingest_with_kills(home, videos, files=500, kills=3, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_kill_9_during_500_file_ingest_many_rounds(home, videos, seed):
    ingest_with_kills(home, videos, files=500, kills=12, seed=100 + seed)
