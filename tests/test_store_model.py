"""The store against a model: generated sequences of transitions, flushes, checkpoints,
prunes, crashes and reopenings, with tiny chunks and a tiny journal so that every
sequence crosses chunk splits and checkpoints. After every step a fresh reader must see
exactly what the model says: every record, the counts, newest-first order, the newest
job for each input, and prefix lookups. Input keys are generated (any Unicode a key can
hold: names from the inbox are untrusted).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from forgesyte.storage import chunks
from forgesyte.storage import index as index_module
from forgesyte.storage import jobs as jobs_module
from forgesyte.storage.ids import utc_now
from forgesyte.storage.jobs import IllegalTransition, JobStore
from forgesyte.storage.recovery import inspect

KEYS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12)


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._saved = (chunks.CHUNK_SIZE, jobs_module.CHUNK_SIZE, jobs_module.JOURNAL_LIMIT,
                       index_module.COMPACT_AT, index_module.ROLL_STEP)
        chunks.CHUNK_SIZE = jobs_module.CHUNK_SIZE = 3
        jobs_module.JOURNAL_LIMIT = 16384  # a checkpoint every few flushes; the journal overlays chunks between
        # The index's compaction rolls after a few entries, over a few checkpoints, and is cut
        # off by crashes in between: readers must still find every input's newest job.
        index_module.COMPACT_AT, index_module.ROLL_STEP = 2, 100
        # On a RAM disk where there is one: the fsyncs cost nothing, the files are the same.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="forgesyte-model-", dir=shm))
        self.store = JobStore(self.dir, autoflush=False)
        self.model: dict[str, dict] = {}  # id -> record as the writer has it
        self.flushed: dict[str, dict] = {}  # id -> record as of the last flush
        self.pruned: set[str] = set()

    def teardown(self) -> None:
        (chunks.CHUNK_SIZE, jobs_module.CHUNK_SIZE, jobs_module.JOURNAL_LIMIT,
         index_module.COMPACT_AT, index_module.ROLL_STEP) = self._saved
        shutil.rmtree(self.dir, ignore_errors=True)

    def ids(self, *statuses):
        return sorted(i for i, r in self.model.items() if r["status"] in statuses and i not in self.pruned)

    # -- transitions --------------------------------------------------------------------
    @rule(key=KEYS, n=st.integers(0, 10**6))
    def create(self, key, n):
        job = self.store.create(key, size=n, mtime_ns=n, sha256=f"{n:064x}", plugins=["metadata"])
        assert job["id"] > max(self.model, default="")  # creation order
        self.model[job["id"]] = job

    def _apply(self, action, job_id, *args, **kwargs):
        self.model[job_id] = getattr(self.store, action)(job_id, *args, **kwargs)

    @precondition(lambda self: self.ids("pending"))
    @rule(data=st.data())
    def claim(self, data):
        self._apply("claim", data.draw(st.sampled_from(self.ids("pending"))))

    @precondition(lambda self: self.ids("running", "pending"))
    @rule(data=st.data(), ok=st.booleans())
    def finish(self, data, ok):
        job_id = data.draw(st.sampled_from(self.ids("running", "pending")))
        if ok:
            self._apply("complete", job_id, "x/results.json")
        else:
            self._apply("fail", job_id, "It broke.")

    @precondition(lambda self: self.ids("running"))
    @rule(data=st.data())
    def requeue(self, data):
        self._apply("requeue", data.draw(st.sampled_from(self.ids("running"))), count_attempt=True)

    @precondition(lambda self: self.ids("failed"))
    @rule(data=st.data())
    def retry(self, data):
        self._apply("retry", data.draw(st.sampled_from(self.ids("failed"))))

    @precondition(lambda self: self.ids("completed"))
    @rule(data=st.data())
    def illegal(self, data):
        job_id = data.draw(st.sampled_from(self.ids("completed")))
        try:
            self.store.claim(job_id)
        except IllegalTransition:
            return
        raise AssertionError("a completed job was claimed")

    @rule()
    def prune_all_finished(self):
        removed = self.store.prune(utc_now() + "~")  # every finished job
        assert {j["id"] for j in removed} == set(self.ids("completed", "failed"))
        self.pruned |= {j["id"] for j in removed}

    # -- durability ----------------------------------------------------------------------
    @rule()
    def flush(self):
        self.store.flush()
        self.flushed = {i: dict(r) for i, r in self.model.items()}
        self.flushed_pruned = set(self.pruned)

    @rule()
    def checkpoint(self):
        self.flush()
        self.store.checkpoint()

    @rule()
    def crash_and_reopen(self):
        """Whatever was not flushed is gone; the writer reopens on what was."""
        self.store = JobStore(self.dir, autoflush=False)  # the old object is dropped unflushed
        self.model = {i: dict(r) for i, r in self.flushed.items()}
        self.pruned = set(getattr(self, "flushed_pruned", set()))

    # -- what a reader must see ------------------------------------------------------------
    @invariant()
    def a_reader_sees_the_last_flush(self):
        reader = JobStore(self.dir, readonly=True)
        live = {i: r for i, r in self.flushed.items() if i not in getattr(self, "flushed_pruned", set())}
        everything = reader.all()
        seen = {j["id"]: j for j in everything}
        assert set(seen) == set(live) and len(everything) == len(live)  # each job once
        assert [j["id"] for j in everything] == sorted(live, reverse=True)
        assert [j["id"] for j in reader.with_status("pending", "running")] == sorted(
            i for i, r in live.items() if r["status"] in ("pending", "running"))
        for job_id, record in live.items():
            assert (seen[job_id]["status"], seen[job_id]["rev"]) == (record["status"], record["rev"])
        counts = {s: sum(1 for r in live.values() if r["status"] == s) for s in jobs_module.STATUSES}
        assert reader.counts() == counts
        assert [j["id"] for j in reader.newest(4)] == sorted(live, reverse=True)[:4]
        for status in ("pending", "failed"):
            assert [j["id"] for j in reader.newest(2, status)] == sorted(
                (i for i, r in live.items() if r["status"] == status), reverse=True)[:2]
        newest_per_input: dict[str, str] = {}
        for job_id, record in self.flushed.items():  # pruned ones count: known content
            newest_per_input[record["input"]] = max(job_id, newest_per_input.get(record["input"], ""))
        for key, job_id in newest_per_input.items():
            assert reader.latest_for_input(key)["id"] == job_id
            assert self.store.latest_for_input(key)["id"] >= job_id  # the writer may be ahead
        for job_id in sorted(live)[-3:]:
            if [i for i in live if i.startswith(job_id[:15])] == [job_id]:
                assert reader.resolve(job_id[:15])["id"] == job_id

    @invariant()
    def the_state_verifies(self):
        assert not inspect(self.dir).blocking


StoreModel.TestCase.settings = settings(max_examples=12, stateful_step_count=40, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_store_against_a_model = StoreModel.TestCase
