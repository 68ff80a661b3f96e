"""A full disk under the state folder: a short write never counts, and nothing is lost.

The audit found a seal's append cut at 8,192 of ~63 KB bytes on a nearly full disk, going
unnoticed, and 468 jobs for 250 inputs after the restart. Here the state lives on a real
tmpfs of 2 MB (mounted by the test, so it needs root, as CI has) filled to the last few
kilobytes, so the kernel itself produces the short writes and ENOSPC.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from forgesyte.storage import chunks
from forgesyte.storage import jobs as jobs_module
from forgesyte.storage.jobs import JobStore
from forgesyte.storage.recovery import inspect
from tests.conftest import wait_until


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the suite as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0750", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(mount, leave: int) -> None:
    """Fill the disk, then give back `leave` bytes (tmpfs counts whole pages)."""
    filler = mount / "filler"
    with open(filler, "ab") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - leave))


def free(mount) -> None:
    (mount / "filler").unlink()


def make_jobs(store, n, prefix="f"):
    return [store.create(f"{prefix}/{i}.mp4", size=i, mtime_ns=i, sha256=f"{i:064x}", plugins=["metadata"])["id"]
            for i in range(n)]


def view(state):
    reader = JobStore(state, readonly=True)
    return reader.counts(), {j["id"]: j["status"] for j in reader.all()}


def test_a_flush_on_a_full_disk_does_not_count_and_succeeds_later(small_disk):
    state = small_disk / "state"
    store = JobStore(state, autoflush=False)
    ids = make_jobs(store, 40)
    store.flush()
    before = view(state)
    journal = state / "jobs" / chunks.read_manifest(state).journal
    size = journal.stat().st_size
    fill(small_disk, leave=4096)
    for job_id in ids:  # one flush of ~40 records, far more than the 4 KB left
        store.claim(job_id)
        store.complete(job_id, "x/results.json")
    with pytest.raises(OSError) as raised:
        store.flush()
    assert raised.value.errno == errno.ENOSPC
    assert journal.stat().st_size == size  # the partial append was cut back
    assert not inspect(state).findings  # no torn tail, nothing to repair
    assert view(state) == before  # readers see the last flush that counted
    free(small_disk)
    assert store.flush()  # the same changes, all of them, now
    store.close()
    counts, statuses = view(state)
    assert counts["completed"] == 40 and set(statuses.values()) == {"completed"}
    assert JobStore(state).counts()["completed"] == 40  # the writer reopens cleanly


def test_a_checkpoint_on_a_full_disk_keeps_the_journal_and_leaves_no_debris(small_disk, monkeypatch):
    state = small_disk / "state"
    store = JobStore(state, autoflush=False)
    ids = make_jobs(store, 600)
    store.flush()
    store.checkpoint()
    for job_id in ids[:300]:
        store.claim(job_id)
        store.complete(job_id, "x/results.json")
    store.flush()
    files = sorted(p.name for p in (state / "jobs").iterdir())
    before = view(state)
    fill(small_disk, leave=16384)  # room for journal appends, not for new chunks
    with pytest.raises(OSError):
        store.checkpoint()
    assert sorted(p.name for p in (state / "jobs").iterdir()) == files  # new files removed
    assert not inspect(state).findings
    assert view(state) == before
    # A checkpoint started by a flush: the flush still counts, the checkpoint waits.
    monkeypatch.setattr(jobs_module, "JOURNAL_LIMIT", 1)
    store.claim(ids[300])
    assert store.flush()
    assert view(state)[1][ids[300]] == "running"
    assert not inspect(state).findings
    free(small_disk)
    store._next_checkpoint_try = 0.0
    store.claim(ids[301])
    assert store.flush()
    assert chunks.read_manifest(state).gen == 2  # checkpointed now
    store.close()
    counts, statuses = view(state)
    assert counts == {"pending": 298, "running": 2, "completed": 300, "failed": 0}
    assert len(statuses) == 600


@pytest.mark.parametrize("step", ["write_chunk", "checkpoint_index", "create_journal", "write_manifest"])
def test_a_checkpoint_that_fails_at_any_step_changes_nothing(tmp_path, monkeypatch, step):
    """Fault injection at each step of a checkpoint (no root needed)."""
    store = JobStore(tmp_path, autoflush=False)
    ids = make_jobs(store, 300)
    store.flush()
    before_files = sorted(p.name for p in (tmp_path / "jobs").iterdir())
    before = view(tmp_path)

    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    target = {"write_chunk": (chunks, "write_chunk"), "checkpoint_index": (store.index, "checkpoint"),
              "create_journal": (jobs_module.journal, "create"), "write_manifest": (chunks, "write_manifest")}[step]
    with monkeypatch.context() as patch:
        patch.setattr(*target, boom)
        with pytest.raises(OSError):
            store.checkpoint()
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == before_files
    assert view(tmp_path) == before and not inspect(tmp_path).findings
    store.claim(ids[0])
    store.flush()
    store.checkpoint()  # and it works once the disk does
    store.close()
    assert JobStore(tmp_path, readonly=True).get(ids[0])["status"] == "running"
    assert not inspect(tmp_path).findings


def test_the_daemon_rides_out_a_full_state_disk(home, videos, small_disk):
    """The real daemon with its state on a full disk: it keeps running, takes every file
    once the disk has room again, and makes no second job for any of them."""
    home.config.write_text(home.config.read_text() + f'state = "{small_disk / "state"}"\n')
    proc = home.start()
    home.drop(videos["clip.webm"], "first.webm")
    home.wait_status("first.webm")
    fill(small_disk, leave=0)
    for i in range(5):
        home.drop(videos["clip.webm"], f"d/{i}.webm").write_bytes(videos["clip.webm"].read_bytes() + b"%d" % i)
    wait_until(lambda: "cannot write the job store" in home.log_text(), 30, "the daemon to say it cannot write")
    assert proc.poll() is None
    free(small_disk)
    for i in range(5):
        home.wait_status(f"d/{i}.webm")
    jobs = home.jobs()
    assert sorted(j["input"] for j in jobs) == ["d/0.webm", "d/1.webm", "d/2.webm", "d/3.webm", "d/4.webm",
                                                "first.webm"]
    assert {j["status"] for j in jobs} == {"completed"}
    assert home.stop(proc) == 0
    assert home.cli("fsck").returncode == 0


def test_a_request_to_the_daemon_on_a_full_disk_is_an_error_not_half_a_request(small_disk):
    """Audit: the mailbox wrote a request with one unchecked os.write, so a full disk could
    leave half a request (the kernel wrote the first page) for the daemon to read. Every
    byte is now checked written before the rename: the sender gets a sentence, and nothing
    named like a request (or a temp file) is left behind."""
    from forgesyte.daemon import mailbox
    from forgesyte.storage import requests

    state = small_disk / "state"
    folder = state / requests.REQUESTS_DIR
    folder.mkdir(parents=True)
    request = {"op": "why", "key": "x" * 20000}  # five pages, one left on the disk
    fill(small_disk, leave=4096)
    with pytest.raises(OSError) as raised:
        mailbox._write(folder / "a.json", requests.encode_request(request), 0o640)
    assert raised.value.errno == errno.ENOSPC
    assert os.listdir(folder) == []  # no half request, no temp file
    with pytest.raises(mailbox.MailboxError, match=r"^The request to the daemon could not be written to "
                                                   r"requests/ in the state folder \(No space left"):
        mailbox.send(state, request, timeout=1)
    assert os.listdir(folder) == []
    free(small_disk)
    mailbox._write(folder / "a.json", requests.encode_request(request), 0o640)  # with room again, it works
    assert requests.decode_request((folder / "a.json").read_bytes(), "a.json") == request
