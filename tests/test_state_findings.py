"""Issue 10's fault audit, one test per finding: each failed on the store before format
versions, checksums and fsck (deleted segments, duplicate jobs, JSONDecodeError, restart
loops, a state of another version read as this one's)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from forgesyte.storage import chunks
from forgesyte.storage.jobs import JobStore
from forgesyte.storage.tinystore import encode_document, write_document
from tests.test_state_damage import build_state, no_traceback


def chunk_files(home) -> set[str]:
    return {p.name for p in (home.state / "jobs").glob("*.json") if p.name != "manifest.json"}


def test_a_missing_manifest_deletes_nothing_and_stops_the_daemon(home, videos, monkeypatch):
    """Audit: a deleted jobs.json or archive manifest made the daemon delete every segment."""
    build_state(home, videos, monkeypatch)
    before = chunk_files(home)
    (home.state / "jobs" / "manifest.json").unlink()
    proc = home.cli("run", "--once", timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("The state file jobs/manifest.json is missing") and proc.stderr.strip(
        ).endswith("run `forgesyte fsck --repair`."), proc.stderr
    assert chunk_files(home) == before  # every chunk still there
    status = home.cli("status")
    assert status.returncode == 1 and "jobs/manifest.json is missing" in status.stderr


def test_cli_readers_name_a_damaged_chunk_and_answer_what_does_not_need_it(home, videos, monkeypatch):
    """Audit: a truncated segment made list/show/results end in `Unexpected error: JSONDecodeError`."""
    expected = build_state(home, videos, monkeypatch)
    manifest = chunks.read_manifest(home.state)
    first = manifest.chunks[0]
    path = home.state / "jobs" / first["name"]
    path.write_bytes(path.read_bytes()[:-100])
    in_first = next(k for k, v in expected.items() if v["id"] < manifest.chunks[1]["min_id"])
    elsewhere = next(k for k, v in expected.items() if v["id"] >= manifest.chunks[-1]["min_id"])
    sentence = f"The state file jobs/{first['name']} is truncated or padded"
    for args in (("show", expected[in_first]["id"]), ("show", in_first), ("results", in_first),
                 ("list", "--limit", "1000"), ("list", "--limit", "1000", "--json")):
        proc = home.cli(*args)
        no_traceback(proc)
        assert proc.returncode == 1 and proc.stderr.startswith(sentence), (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
    assert home.json("status")["total"] == len(expected)  # counts come from the manifest and journal
    assert home.json("show", elsewhere)["id"] == expected[elsewhere]["id"]
    assert len(home.json("list", "--limit", "3")) == 3  # the newest jobs live in other chunks


def forge_chunk_record(home, change, status: str) -> tuple[str, str]:
    """Rewrite the chunk holding the first job in `status` with that record changed by
    another writer (checksums made to match, as a foreign tool would): it verifies by
    checksum, not by content. Returns (job id, chunk file relative to the state folder)."""
    store = JobStore(home.state, autoflush=False)
    if status == "pending":  # fold the open journal into the chunks, so the record lives in one
        store.checkpoint()
    store.close()
    manifest = chunks.read_manifest(home.state)
    for number, entry in enumerate(manifest.chunks):
        records = sorted(chunks.read_chunk(home.state, entry).values(), key=lambda r: r["id"])
        victim = next((r for r in records if r["status"] == status), None)
        if victim is not None:
            break
    change(victim)
    new = chunks.write_chunk(home.state, records, manifest.gen, entry["min_id"])  # same name: replaced
    assert new["name"] == entry["name"]
    manifest.chunks[number] = new
    chunks.write_manifest(home.state, manifest)
    return victim["id"], f"jobs/{entry['name']}"


def test_a_finished_record_with_an_unknown_status_is_named_and_repaired(home, videos, monkeypatch):
    """Audit: a record with an unknown status (`cancelled`) made the daemon exit 1 at every
    start (`KeyError: 'cancelled'`) while `doctor` said all was fine. Now the daemon runs
    (it never acts on a finished record), and doctor and fsck name the file."""
    build_state(home, videos, monkeypatch)
    job_id, name = forge_chunk_record(home, lambda r: r.update(status="cancelled"), "completed")
    proc = home.cli("run", "--once", timeout=120)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    doctor = home.cli("doctor")
    assert doctor.returncode == 1 and f"[FAIL] state: {name}" in doctor.stdout, doctor.stdout
    assert "unknown status 'cancelled'" in doctor.stdout
    check = home.cli("fsck")
    assert check.returncode == 1 and name in check.stdout and job_id in check.stdout
    assert home.cli("fsck", "--repair").returncode == 0
    job = home.json("show", job_id)
    assert job["status"] == "failed" and "unknown status 'cancelled'" in job["error"]
    assert home.cli("run", "--once", timeout=120).returncode == 0


def test_a_pending_record_without_its_size_stops_the_daemon_with_a_sentence(home, videos, monkeypatch):
    """Audit: a record without `size` made the daemon exit 1 at every start with a Python
    exception name. The daemon acts on pending records, so it refuses, naming the file."""
    build_state(home, videos, monkeypatch)
    job_id, name = forge_chunk_record(home, lambda r: r.pop("size"), "pending")
    proc = home.cli("run", "--once", timeout=120)
    no_traceback(proc)
    assert proc.returncode == 3 and name in proc.stderr and job_id in proc.stderr, proc.stderr
    assert "lacks 'size'" in proc.stderr and "forgesyte fsck --repair" in proc.stderr
    assert home.cli("fsck", "--repair").returncode == 0
    assert home.cli("run", "--once", timeout=120).returncode == 0
    # The broken record is kept aside (quarantine) and its input taken again as a new job.
    assert home.cli("show", job_id).returncode == 1
    assert {j["status"] for j in home.jobs()} <= {"completed", "failed"}
    per_input = [j["input"] for j in home.jobs()]
    assert len(per_input) == len(set(per_input))
    assert any(job_id.encode() in p.read_bytes() for p in (home.state / "quarantine").rglob("*") if p.is_file())


def test_a_directory_where_a_request_belongs_goes_to_quarantine(home, videos):
    """Audit: a directory at requests/evil.json made the daemon exit 1 at every start."""
    (home.state / "requests" / "evil.json").mkdir(parents=True)
    home.drop(videos["clip.webm"], "a.webm")
    proc = home.cli("run", "--once", timeout=120)
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert not (home.state / "requests" / "evil.json").exists()
    assert any(p.name.endswith("requests_evil.json") for p in (home.state / "quarantine").iterdir())
    assert home.json("show", "a.webm")["status"] == "completed"


def test_junk_among_requests_while_the_daemon_runs_is_not_a_request(home, videos):
    """A directory, a link and a document that is not an object appear in requests/ under a
    running daemon: it keeps running and still answers the CLI."""
    proc = home.start()
    requests = home.state / "requests"
    requests.mkdir(exist_ok=True)
    (requests / "dir.json").mkdir()
    (requests / "link.json").symlink_to("/etc/passwd")
    (requests / "list.json").write_text("[1, 2]")
    home.drop(videos["clip.webm"], "a.webm")
    home.wait_status("a.webm")
    answer = home.cli("retry", "a.webm")  # a real request, through the mailbox
    assert answer.returncode == 1 and "not failed" in answer.stderr, answer.stderr
    assert proc.poll() is None, home.log_text()
    assert (requests / "dir.json").is_dir()  # left for recovery to quarantine at the next start
    # a document that is not a verified request was answered and kept, not obeyed or deleted
    assert not (requests / "list.json").exists()
    assert any(p.name.endswith("requests_list.json") for p in (home.state / "quarantine").iterdir())
    assert home.stop(proc) == 0
    assert "Traceback" not in home.log_text()


@pytest.mark.parametrize("content", [
    b'{"op": "retry", "job": "x.mp4"}\n',  # plain JSON: a garble that parses, or an older CLI
    b"garbage\x00\xff",
    "checksum",  # a real request with one byte of its body changed
    "version",  # a request from another version of ForgeSyte
], ids=["plain-json", "garbage", "checksum", "version"])
def test_a_request_that_does_not_verify_is_answered_never_obeyed_and_kept(tmp_path, content):
    """Requests are state files too (issue 10, item 1): a request that is not a verified
    forgesyte-request document of this version is answered with a sentence naming it, its
    handler never runs, and the file goes to quarantine/ instead of being deleted."""
    from forgesyte.daemon import mailbox
    from forgesyte.storage import requests

    state = tmp_path / "state"
    (state / "requests").mkdir(parents=True)
    if content == "checksum":
        raw = bytearray(requests.encode_request({"op": "retry", "job": "x.mp4"}))
        raw[-3] ^= 0x01
        content = bytes(raw)
    elif content == "version":
        content = encode_document(requests.REQUEST_FORMAT, requests.VERSION + 1, {"op": "retry"})
    (state / "requests" / "r1.json").write_bytes(content)
    obeyed = []
    assert mailbox.serve(state, lambda request: obeyed.append(request) or {"ok": True}) == 1
    assert obeyed == []
    reply = requests.decode_reply((state / "requests" / "r1.reply").read_bytes(), "r1.reply")
    assert reply["ok"] is False and "requests/r1.json" in reply["error"], reply
    assert "\n" not in reply["error"] and "Traceback" not in reply["error"]
    assert not (state / "requests" / "r1.json").exists()
    kept = [p for p in (state / "quarantine").iterdir() if p.name.endswith("requests_r1.json")]
    assert [p.read_bytes() for p in kept] == [content]


def test_a_verified_request_is_obeyed_and_answered(tmp_path):
    from forgesyte.daemon import mailbox

    state = tmp_path / "state"
    state.mkdir()
    served = []

    def daemon():
        deadline = time.monotonic() + 10
        while not served and time.monotonic() < deadline:
            if mailbox.serve(state, lambda request: {"ok": True, "echo": request}):
                served.append(True)
            time.sleep(0.02)

    thread = threading.Thread(target=daemon)
    thread.start()
    answer = mailbox.send(state, {"op": "retry", "job": "caf\u00e9.mp4"}, timeout=10)
    thread.join()
    assert answer == {"ok": True, "echo": {"op": "retry", "job": "caf\u00e9.mp4"}}
    assert list((state / "requests").iterdir()) == []


@pytest.mark.parametrize("which", ["manifest", "chunk", "journal"])
def test_a_state_of_another_format_version_is_refused_and_left_alone(home, videos, monkeypatch, which):
    """Audit: no file carried a format version; a state from another version was read as
    if it were this one's."""
    build_state(home, videos, monkeypatch)
    manifest = chunks.read_manifest(home.state)
    folder = home.state / "jobs"
    if which == "manifest":
        path = folder / "manifest.json"
        write_document(path, chunks.MANIFEST_FORMAT, 2, manifest.body())
    elif which == "chunk":
        path = folder / manifest.chunks[-1]["name"]
        path.write_bytes(encode_document(chunks.CHUNK_FORMAT, 2, {"jobs": {}}))
    else:
        path = folder / manifest.journal
        from forgesyte.storage import recordlog
        path.write_bytes(recordlog.encode({"format": "forgesyte-journal", "version": 2, "gen": manifest.gen}))
    rel = path.relative_to(home.state).as_posix()
    before = {p: p.read_bytes() for p in home.state.rglob("*") if p.is_file() and p.name != "daemon.lock"}
    readers = [("status",)] if which != "chunk" else []  # status needs no chunk
    for args in [("run", "--once"), ("fsck",), ("fsck", "--repair"), *readers]:
        proc = home.cli(*args, timeout=120)
        no_traceback(proc)
        assert proc.returncode == (3 if args[0] == "run" else 1), (args, proc.stderr, proc.stdout)
        assert rel in proc.stderr + proc.stdout and "format version 2" in proc.stderr + proc.stdout
        assert "fsck --repair`." not in proc.stderr  # repairing would only destroy it
    after = {p: p.read_bytes() for p in home.state.rglob("*") if p.is_file() and p.name != "daemon.lock"}
    assert after == before  # refused, not repaired, not rewritten


def write_v1_state(state, inbox, data: bytes) -> list[str]:
    """The layout of the first release (no versions): an active TinyDB file, one archive
    segment, and an index that remembers a pruned input."""
    import hashlib

    def record(i, status):
        key = f"old/{i}.webm"
        (inbox / "old").mkdir(parents=True, exist_ok=True)
        (inbox / key).write_bytes(data + b"%d" % i)
        st = (inbox / key).stat()
        return {"id": f"01j0000000000{i:03d}", "status": status, "input": key,
                "output": f"old/{i}.webm-x/results.json" if status == "completed" else None,
                "plugins": ["metadata"], "attempts": 1 if status == "completed" else 0, "progress": 0,
                "error": None, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "sha256": hashlib.sha256((inbox / key).read_bytes()).hexdigest(), "duplicate_of": None,
                "created_at": "2025-01-01T00:00:00.000Z", "started_at": None,
                "finished_at": "2025-01-01T00:00:01.000Z" if status == "completed" else None}
    archived = [record(i, "completed") for i in range(3)]
    active = [record(3, "completed"), record(4, "pending")]
    pruned = record(5, "completed")
    (state / "archive").mkdir(parents=True)
    (state / "index").mkdir()
    (state / "jobs.json").write_text(json.dumps({"jobs": {str(i + 1): j for i, j in enumerate(active)},
                                                 "meta": {"1": {"gen": 1}}}))
    (state / "archive" / "seg.json").write_text(json.dumps({"jobs": {str(i + 1): j for i, j in enumerate(archived)}}))
    (state / "archive" / "manifest.json").write_text(json.dumps({"segments": [{
        "name": "seg", "min_id": archived[0]["id"], "max_id": archived[-1]["id"], "count": 3,
        "counts": {"completed": 3}, "gen": 1, "retired": None, "oldest_finish": "2025-01-01T00:00:01.000Z"}]}))
    (state / "index" / "log.jsonl").write_text(json.dumps(
        {"i": pruned["input"], "e": [pruned["id"], pruned["size"], pruned["mtime_ns"], pruned["sha256"], pruned["id"]]}) + "\n")
    return [j["id"] for j in archived + active]


def test_a_state_of_the_first_layout_is_converted_without_losing_anything(home, videos):
    home.state.mkdir(parents=True)
    ids = write_v1_state(home.state, home.inbox, videos["clip.webm"].read_bytes())
    assert home.cli("status").returncode == 1  # readers say what to do rather than guess
    proc = home.cli("run", "--once", timeout=120)
    assert proc.returncode == 0, proc.stderr
    jobs = {j["id"]: j for j in home.jobs()}
    assert set(ids) <= set(jobs)  # every record kept, ids unchanged
    assert jobs[ids[-1]]["status"] == "completed"  # the pending one ran
    assert len(jobs) == len(ids)  # no new job: neither for known inputs nor for the pruned one
    assert not (home.state / "jobs.json").exists() and not (home.state / "archive").exists()
    kept = {p.name for p in (home.state / "quarantine").iterdir()}
    assert any(n.endswith("jobs.json") for n in kept) and any(n.endswith("archive") for n in kept)
    assert home.cli("fsck").returncode == 0


def test_a_stale_results_document_does_not_finish_a_retried_job(home, videos):
    """A failed job retried while no daemon ran must run again at the next start, not be
    failed again from the document its first attempt left (found while building fsck)."""
    (home.inbox).mkdir(parents=True, exist_ok=True)
    (home.inbox / "broken.mkv").write_bytes(b"\x1aE\xdf\xa3" + b"\x00" * 100)
    assert home.cli("run", "--once", timeout=120).returncode == 1
    first = home.json("show", "broken.mkv")
    assert first["status"] == "failed"
    assert home.cli("retry", "broken.mkv").returncode == 0
    assert home.cli("run", "--once", timeout=120).returncode == 1
    again = home.json("show", "broken.mkv")
    assert again["id"] == first["id"] and again["status"] == "failed"
    assert again["started_at"] is not None and again["started_at"] > first["started_at"]  # it ran again


def test_every_finished_job_has_a_results_document_with_its_record(home, videos):
    """Jobs that end without a worker run (a duplicate reusing a result, a duplicate of a
    failed original) carry their record in the output folder too."""
    home.drop(videos["clip.webm"], "a.webm")
    (home.inbox / "bad.mkv").write_bytes(b"\x1aE\xdf\xa3" + b"\x00" * 100)
    assert home.cli("run", "--once", timeout=120).returncode == 1
    shutil.copy(home.inbox / "a.webm", home.inbox / "copy.webm")  # same content: reuses a's result
    shutil.copy(home.inbox / "bad.mkv", home.inbox / "bad-copy.mkv")  # a duplicate of a failed job
    proc = home.start()
    for name in ("copy.webm", "bad-copy.mkv"):
        home.wait_status(name)
    home.stop(proc)
    for job in home.jobs():
        assert job["output"], job
        document = json.loads((home.output / job["output"]).read_text())
        assert document["job"]["id"] == job["id"] and document["job"]["status"] == job["status"]
        assert document["job"]["rev"] == job["rev"]
    store = JobStore(home.state, readonly=True)
    assert store.resolve("copy.webm")["duplicate_of"] == store.resolve("a.webm")["id"]


@pytest.mark.parametrize("then", ["nothing", "a CLI write"])
def test_a_lost_state_folder_is_rebuilt_from_the_output_not_started_afresh(home, videos, monkeypatch, then):
    """The whole state folder gone (or replaced by an empty store, e.g. after a CLI write
    made one): starting afresh would take every input again, as new jobs. The daemon
    refuses; fsck --repair brings every finished job back from its results document."""
    expected = build_state(home, videos, monkeypatch)
    shutil.rmtree(home.state)
    if then == "a CLI write":
        home.cli("retry", "cam0/clip000.webm")  # fails (unknown job), but opens a fresh store
    proc = home.cli("run", "--once", timeout=120)
    no_traceback(proc)
    assert proc.returncode == 3 and "results documents of earlier jobs" in proc.stderr, proc.stderr
    repaired = home.cli("fsck", "--repair", timeout=120)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert home.cli("run", "--once", timeout=120).returncode == 0
    jobs = {j["input"]: j for j in home.jobs()}
    assert len(jobs) == len(home.jobs()) == len(expected)  # one job per input
    for key, want in expected.items():
        if want["status"] != "pending":
            assert (jobs[key]["id"], jobs[key]["status"]) == (want["id"], want["status"])


def test_a_journal_deleted_under_the_running_daemon_stops_it_with_a_sentence(home, videos):
    proc = home.start()
    home.drop(videos["clip.webm"], "a.webm")
    home.wait_status("a.webm")
    journal = next((home.state / "jobs").glob("journal.*.log"))
    journal.unlink()
    home.drop(videos["clip.webm"], "b.webm").write_bytes(videos["clip.webm"].read_bytes() + b"b")
    assert proc.wait(timeout=60) == 3
    log = home.log_text()
    assert f"jobs/{journal.name} disappeared while it was being written to" in log
    assert "Traceback" not in log
    assert home.cli("fsck", "--repair").returncode == 0
    assert home.cli("run", "--once", timeout=120).returncode == 0
    assert sorted(j["input"] for j in home.jobs()) == ["a.webm", "b.webm"]


def test_fsck_checks_and_rebuilds_the_fingerprint_index(home, videos, monkeypatch):
    """state/similar/fingerprints.log (forgesyte similar) is derived data in the state
    folder: fsck names it when it does not verify, --repair rebuilds it, keeping a copy."""
    from forgesyte import similar

    build_state(home, videos, monkeypatch)
    from forgesyte.storage import fingerprints

    fingerprints.write_index(home.state, [{"job_id": "x", "input": "a", "interval_s": 1.0, "hashes": ["00"]}])
    path = similar.index_path(home.state)
    damaged = path.read_bytes()[:-7]
    path.write_bytes(damaged)
    check = home.cli("fsck")
    assert check.returncode == 1 and "similar/fingerprints.log: has 1 damaged line" in check.stdout, check.stdout
    assert home.cli("fsck", "--repair").returncode == 0
    similar.read_index(home.state)  # verifies again
    assert any(p.read_bytes() == damaged for p in (home.state / "quarantine").iterdir() if p.is_file())
    assert home.cli("fsck").returncode == 0


def test_a_fingerprint_index_of_another_version_is_kept_in_quarantine_and_rebuilt_at_start(
        home, videos, monkeypatch, caplog):
    """Audit: the daemon overwrote a fingerprint index it could not verify, of another format
    version too, in place. It is derived data, so rebuilding is right, but the old file is
    moved to quarantine/ first, with a log line that names it and says why."""
    import logging

    from forgesyte.storage import fingerprints, recordlog
    from forgesyte.storage.recovery import open_daemon_store
    from tests.test_state_damage import fingerprinted_ids

    build_state(home, videos, monkeypatch)
    path = fingerprints.index_path(home.state)
    foreign = recordlog.encode({"format": fingerprints.FORMAT, "version": 2}) + recordlog.encode(
        {"job_id": "x", "vectors": [1, 2]})
    path.write_bytes(foreign)
    with caplog.at_level(logging.INFO, logger="forgesyte"):
        store = open_daemon_store(home.state, home.output)
    store.close()
    text = caplog.text
    assert ("similar/fingerprints.log has format version 2 and this ForgeSyte reads version 1; it is "
            "derived data, rebuilt from the results documents: moved to quarantine/") in text, text
    assert "rebuilt similar/fingerprints.log from the results documents" in text, text
    assert [p.read_bytes() for p in (home.state / "quarantine").iterdir()] == [foreign]
    assert {e["job_id"] for e in fingerprints.read_index(home.state)} == fingerprinted_ids(home)
    assert home.cli("fsck").returncode == 0


def test_doctor_makes_the_checks_of_fsck(home, videos, monkeypatch):
    """Audit: `doctor` skipped the fingerprint index and the output folder, which fsck checks.
    Both now call one check (storage/rebuild.py: stable_check): whatever fsck names, doctor names."""
    from forgesyte.storage import fingerprints

    expected = build_state(home, videos, monkeypatch)
    path = fingerprints.index_path(home.state)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] + b"garbage" + data[len(data) // 2 + 7:])
    documents = sorted(home.output.rglob("results.json"))
    documents[0].unlink()  # a finished job's results document is missing: a notice
    ghost = json.loads(documents[1].read_bytes())  # a document of a job the store never heard of
    ghost["job_id"] = ghost["job"]["id"] = "zzzzzzzzzzzzzzzzghost"
    (home.output / "ghost").mkdir()
    (home.output / "ghost" / "results.json").write_text(json.dumps(ghost))
    fsck = json.loads(home.cli("fsck", "--json").stdout)
    named = {(f["folder"], f["file"]) for f in fsck["problems"] + fsck["notices"]}
    assert ("state", "similar/fingerprints.log") in named and ("output", "ghost/results.json") in named, named
    assert len(named) == 3, named
    doctor = home.cli("doctor")
    no_traceback(doctor)
    assert doctor.returncode == 1, doctor.stdout
    assert "[warn] state: similar/fingerprints.log has 1 damaged line" in doctor.stdout, doctor.stdout
    assert "[FAIL] (output) ghost/results.json belongs to job zzzzzzzzzzzzzzzzghost" in doctor.stdout
    for folder, name in named:
        assert (name if folder == "output" else f"state: {name}") in doctor.stdout, (name, doctor.stdout)
    assert len(expected) == fsck["records"]


@pytest.mark.parametrize("name", ["events.log", "events.1.log"])
@pytest.mark.parametrize("header", [b"garbled\n", b'%08x {"format":"forgesyte-events","version":2}\n'])
def test_cli_readers_name_a_damaged_event_log_relative_to_the_state_folder(home, videos, monkeypatch,
                                                                            name, header):
    """Audit: `events` named a damaged event log `events.log` (and the fingerprint index by its
    absolute path): now each is named like every other state file, in one sentence."""
    import zlib

    from forgesyte.storage import fingerprints

    build_state(home, videos, monkeypatch)
    if header.startswith(b"%08x"):
        body = header[5:-1]
        header = b"%08x " % zlib.crc32(body) + body + b"\n"
    path = home.state / "events" / name
    path.write_bytes(header + path.read_bytes().split(b"\n", 1)[1])
    proc = home.cli("events")
    no_traceback(proc)
    problem = ("has format version 2 and this ForgeSyte reads version 1" if b"version" in header
               else "does not start with its ForgeSyte header")
    assert proc.returncode == 1 and proc.stderr.startswith(f"The state file events/{name} {problem}; "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and str(home.state) not in proc.stderr
    # and the fingerprint index: `similar` answers from the results documents, saying so once
    index = fingerprints.index_path(home.state)
    index.write_bytes(index.read_bytes()[:-9])
    some = next(e for e in json.loads(home.cli("list", "--limit", "100", "--json").stdout)
                if "fingerprint" in e["plugins"] and e["status"] == "completed")
    answer = home.cli("similar", some["id"], "--json")
    assert answer.returncode == 0, answer.stderr
    assert answer.stderr.startswith("The state file similar/fingerprints.log is damaged at byte "), answer.stderr
    assert len(answer.stderr.strip().splitlines()) == 1 and str(home.state) not in answer.stderr
