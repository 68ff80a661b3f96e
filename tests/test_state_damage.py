"""The corruption matrix: every kind of state file, damaged every way, then the real daemon
and `forgesyte fsck --repair`. Nothing lost, nothing doubled, nothing deleted, no traceback.

The state is built the way the daemon builds it (JobStore transitions, results documents
written with the record the worker embeds), with small chunks so that a few dozen jobs
span several chunk files, an open journal and a logged index, an event log that has
rotated once, and the fingerprint index of `similar`. Every input is a real video in the
inbox, so a lost record would show up as a second job for that input. Every state file's
bytes are taken before the damage: afterwards each is still in place (a log may have
grown) or in state/quarantine/, so nothing was deleted outside quarantine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from forgesyte.storage import chunks, fingerprints
from forgesyte.storage import jobs as jobs_module
from forgesyte.storage.jobs import JobStore
from forgesyte.storage.results import ResultStore, finished_record

FINISHED, PENDING = 40, 2
KINDS = ["manifest", "first chunk", "last chunk", "journal", "index bucket", "index log", "events",
         "previous events", "fingerprint index", "request"]
# Damage that is no damage: a log that starts over, an index not written yet, no request.
NOT_DAMAGE = {("events", "empty"), ("events", "delete"), ("previous events", "empty"),
              ("previous events", "delete"), ("fingerprint index", "delete"), ("request", "delete")}
DAMAGES = ["truncate", "empty", "garble", "delete"]


def build_state(home, videos, monkeypatch) -> dict:
    """FINISHED completed/failed jobs in several chunks plus some in the open journal, and
    PENDING jobs waiting; returns what the test must find again afterwards."""
    monkeypatch.setattr(chunks, "CHUNK_SIZE", 8)
    monkeypatch.setattr(jobs_module, "CHUNK_SIZE", 8)
    data = videos["clip.webm"].read_bytes()
    home.inbox.mkdir(parents=True, exist_ok=True)
    results = ResultStore(home.output)
    store = JobStore(home.state, autoflush=False)
    expected: dict[str, dict] = {}
    fingerprinted: list[dict] = []
    for i in range(FINISHED + PENDING):
        key = f"cam{i % 3}/clip{i:03d}.webm"
        path = home.inbox / key
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data + b"%d" % i)
        st = path.stat()
        status = "failed" if i % 5 == 0 else "completed"
        plugins = ["metadata", "fingerprint"] if i < FINISHED and status == "completed" and i % 2 else ["metadata"]
        job = store.create(key, size=st.st_size, mtime_ns=st.st_mtime_ns,
                           sha256=hashlib.sha256(path.read_bytes()).hexdigest(), plugins=plugins)
        store.flush()
        if i == FINISHED // 2:  # the event log rotates (as at MAX_BYTES): events.1.log and events.log
            os.replace(home.state / "events" / "events.log", home.state / "events" / "events.1.log")
        if i >= FINISHED:
            expected[key] = {"id": job["id"], "status": "pending"}
            continue
        job = store.claim(job["id"])
        error = "The file is not a decodable video." if status == "failed" else None
        folder = ResultStore.job_folder_key(key, job["id"])
        record = finished_record(jobs_module.public_record(job), status, error, results.results_key(folder))
        sections = {"metadata": {}}
        if "fingerprint" in plugins:
            sections["fingerprint"] = {"interval_s": 1.0, "hashes": [f"{i:016x}", f"{i * 7919:016x}"]}
            fingerprinted.append(fingerprints.entry_of(record, sections["fingerprint"]))
        results.write(folder, {"job_id": job["id"], "input": key, "plugins": sections, "job": record})
        if status == "completed":
            store.complete(job["id"], record["output"])
        else:
            store.fail(job["id"], error, record["output"])
        store.flush()
        if i == FINISHED - 10:
            store.checkpoint()  # the last 10 finished jobs stay in the open journal
        expected[key] = {"id": job["id"], "status": status}
    store.close()
    fingerprints.write_index(home.state, fingerprinted)  # as the daemon appends them
    manifest = chunks.read_manifest(home.state)
    assert len(manifest.chunks) >= 4 and (home.state / "index" / "log.log").exists()
    assert (home.state / "events" / "events.1.log").exists() and len(fingerprinted) >= 10
    return expected


def fingerprinted_ids(home) -> set[str]:
    """The jobs whose results documents carry a fingerprint (what the index must hold)."""
    return {json.loads(p.read_bytes())["job_id"] for p in home.output.rglob("results.json")
            if "fingerprint" in json.loads(p.read_bytes())["plugins"]}


def state_files(home) -> dict[str, bytes]:
    """Every state file outside quarantine/ (relative name -> bytes)."""
    return {p.relative_to(home.state).as_posix(): p.read_bytes() for p in sorted(home.state.rglob("*"))
            if p.is_file() and p.relative_to(home.state).parts[0] != "quarantine"}


def target(home, kind: str) -> Path:
    manifest = chunks.read_manifest(home.state)
    jobs_dir = home.state / "jobs"
    if kind == "request":
        return _request(home)
    return {
        "manifest": jobs_dir / "manifest.json",
        "first chunk": jobs_dir / manifest.chunks[0]["name"],
        "last chunk": jobs_dir / manifest.chunks[-1]["name"],
        "journal": jobs_dir / manifest.journal,
        "index bucket": next(p for p in sorted((home.state / "index").glob("*.json"))
                             if b'"inputs":{}' not in p.read_bytes()),
        "index log": home.state / "index" / "log.log",
        "events": home.state / "events" / "events.log",
        "previous events": home.state / "events" / "events.1.log",
        "fingerprint index": fingerprints.index_path(home.state),
    }[kind]


def _request(home) -> Path:
    """A request a CLI left for the daemon (a harmless one: `why`), to be damaged."""
    path = home.state / "requests" / "0123456789abcdef0123456789abcdef.json"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        from forgesyte.storage.requests import encode_request

        path.write_bytes(encode_request({"op": "why", "key": "cam0/clip000.webm"}))
    return path


def damage(path: Path, how: str) -> bytes:
    data = path.read_bytes()
    if how == "truncate":
        cut = len(data) // 2
        cut -= data[cut - 1:cut] == b"\n"  # mid-line, so the file is visibly cut
        path.write_bytes(data[:cut])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garble":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 16]) + data[middle + 16:])
    else:
        path.unlink()
    return data


def quarantined_bytes(home) -> list[bytes]:
    folder = home.state / "quarantine"
    return [p.read_bytes() for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def fsck_json(proc) -> dict:
    """stdout is exactly one document, valid against docs/schema/fsck.schema.json."""
    import jsonschema

    document = json.loads(proc.stdout)
    schema = json.loads((Path(__file__).resolve().parent.parent / "docs/schema/fsck.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(document)
    return document


def no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr and "Unexpected error" not in proc.stderr, proc.stderr


TRUTH = ("manifest", "first chunk", "last chunk", "journal")  # the rest is derived data or history


def fsck_here(home, *args):
    """`forgesyte fsck ARGS` run in this process through click's runner: the matrix runs it
    56 times, and the daemon cases below run every command as a real process anyway.
    An exception that escaped the command would be a traceback: it fails here."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    from forgesyte.cli import cli

    result = CliRunner().invoke(cli, ["fsck", *args], env=home.env())
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def damage_and_check(home, kind: str, how: str, here: bool = False) -> tuple[str, bytes]:
    """Damage one file; `fsck --json` must name it (exit 1) without a traceback."""
    victim = target(home, kind)
    rel = victim.relative_to(home.state).as_posix()
    damage(victim, how)
    check = fsck_here(home, "--json") if here else home.cli("fsck", "--json")
    no_traceback(check)
    report = fsck_json(check)
    if (kind, how) in NOT_DAMAGE:
        assert check.returncode == 0, report
    else:
        assert check.returncode == 1 and rel in {p["file"] for p in report["problems"]}, report
    return rel, victim.read_bytes() if victim.exists() else b""


def assert_nothing_deleted(home, before: dict[str, bytes], victim: str) -> None:
    """Every state file there was before the damage (but the one damaged, which the caller
    checks) is still in place, byte for byte or grown (an append-only log), or its bytes are
    in state/quarantine/ (moved or copied there, e.g. before fsck rebuilt the store), or it
    was cut back to a good prefix with the rest kept in quarantine."""
    kept = quarantined_bytes(home)
    digests = {hashlib.sha256(b).digest() for b in kept}
    gone = []
    for rel, data in before.items():
        if rel == victim or rel == "daemon.lock":  # the lock holds the current holder's pid: not data
            continue
        path = home.state / rel
        current = path.read_bytes() if path.is_file() else None
        if hashlib.sha256(data).digest() in digests:
            continue
        if current is not None and current.startswith(data):
            continue
        if current is not None and any(piece and data.endswith(piece) and current.startswith(data[:-len(piece)])
                                       for piece in kept):
            continue
        gone.append(rel)
    assert not gone, f"state files neither in place nor in quarantine/: {gone}"


def assert_nothing_lost(home, expected, inbox_before, results_before, left: bytes, rel: str,
                        daemon_ran: bool) -> None:
    store = JobStore(home.state, readonly=True)
    per_input: dict[str, list] = {}
    for job in store.all():
        per_input.setdefault(job["input"], []).append(job)
    doubled = {k: [j["id"] for j in v] for k, v in per_input.items() if len(v) > 1}
    assert not doubled, f"a second job for an input: {doubled}"
    for key, want in expected.items():
        if want["status"] != "pending":  # finished: same job, same outcome (from a results document if need be)
            assert [(j["id"], j["status"]) for j in per_input.get(key, [])] == [(want["id"], want["status"])], key
        elif daemon_ran:
            assert [j["status"] for j in per_input.get(key, [])] == ["completed"], key
        elif key in per_input:  # a pending record that survived must still match its file...
            st = (home.inbox / key).stat()
            latest = store.latest_for_input(key)
            assert (latest["size"], latest["mtime_ns"]) == (st.st_size, st.st_mtime_ns), key
        # ...and one that was lost is taken from the inbox again (not known: a new job)
    # Nothing deleted: the inbox and every results document are still there, and what
    # was left of the damaged file was kept in quarantine.
    assert sorted(p for p in home.inbox.rglob("*") if p.is_file()) == inbox_before
    assert set(results_before) <= set(home.output.rglob("results.json"))
    if left:  # whole in quarantine, or in place with a cut-off torn tail in quarantine
        kept = quarantined_bytes(home)
        current = (home.state / rel).read_bytes() if (home.state / rel).is_file() else b""
        assert left in kept or current.startswith(left) or any(
            piece and left.endswith(piece) and current.startswith(left[:-len(piece)]) for piece in kept), \
            f"the damaged {rel} was neither kept in quarantine nor left in place"
    # The fingerprint index, if there is one, verifies and holds every fingerprinted job
    # (derived data: rebuilt from the results documents when it did not verify).
    if fingerprints.index_path(home.state).exists() or not rel.startswith("similar/"):
        held = {e["job_id"] for e in fingerprints.read_index(home.state)}
        assert held == fingerprinted_ids(home), held ^ fingerprinted_ids(home)


@pytest.fixture
def ram_home(tmp_path):
    """A home on a RAM disk where there is one (/dev/shm): the matrix fsyncs thousands of
    times and nothing here is about the disk (test_state_enospc.py is)."""
    from tests.conftest import Home, write_config

    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="forgesyte-matrix-", dir=shm)) if os.access(shm, os.W_OK) else tmp_path
    root = base / "home"
    yield Home(root, write_config(root, settle_seconds=0.3, scan_interval=60, workers=2))
    if base != tmp_path:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_fsck_repair_of_a_damaged_state_file(ram_home, videos, monkeypatch, kind, how):
    """Every kind x every damage: fsck names the file; fsck --repair leaves a healthy state
    that has lost no finished job, knows every input that has a job, and deleted nothing."""
    home = ram_home
    expected = build_state(home, videos, monkeypatch)
    inbox_before = sorted(p for p in home.inbox.rglob("*") if p.is_file())
    results_before = sorted(home.output.rglob("results.json"))
    files_before = state_files(home)
    rel, left = damage_and_check(home, kind, how, here=True)
    repaired = fsck_here(home, "--repair", "--json")
    no_traceback(repaired)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    report = fsck_json(repaired)
    assert report["healthy"] and report["remaining"] == [] and report["repaired"] == bool(report["problems"])
    assert_nothing_lost(home, expected, inbox_before, results_before, left, rel, daemon_ran=False)
    assert_nothing_deleted(home, files_before, rel)


def daemon_case(home, videos, monkeypatch, kind, how):
    expected = build_state(home, videos, monkeypatch)
    inbox_before = sorted(p for p in home.inbox.rglob("*") if p.is_file())
    results_before = sorted(home.output.rglob("results.json"))
    files_before = state_files(home)
    rel, left = damage_and_check(home, kind, how)
    first = home.cli("run", "--once", timeout=120)
    no_traceback(first)
    if kind in TRUTH:
        assert first.returncode == 3, first.stderr
        assert rel in first.stderr and "forgesyte fsck --repair" in first.stderr, first.stderr
        assert len(first.stderr.strip().splitlines()) == 1, first.stderr  # one sentence
        repaired = home.cli("fsck", "--repair", timeout=120)
        no_traceback(repaired)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        again = home.cli("run", "--once", timeout=120)
        no_traceback(again)
        assert again.returncode == 0, again.stderr
    else:  # derived data or history: the daemon repairs it by itself and runs
        assert first.returncode == 0, first.stderr
    assert home.cli("fsck").returncode == 0
    assert_nothing_lost(home, expected, inbox_before, results_before, left, rel, daemon_ran=True)
    assert_nothing_deleted(home, files_before, rel)


# One damage per kind through the real daemon, plus two the audit found (an emptied active
# file, a truncated index log that made 250 duplicate jobs); the rest run with -m slow.
QUICK = [(kind, "garble") for kind in KINDS if kind != "previous events"] + [
    ("journal", "empty"), ("index log", "truncate")]


@pytest.mark.parametrize("kind, how", QUICK)
def test_daemon_start_on_a_damaged_state_file(home, videos, monkeypatch, kind, how):
    """The real daemon: repairs derived data by itself; exits 3 naming a damaged truth file,
    and after `fsck --repair` runs every pending job and makes no second job for any input."""
    daemon_case(home, videos, monkeypatch, kind, how)


@pytest.mark.slow
@pytest.mark.parametrize("kind, how", [(k, h) for k in KINDS for h in DAMAGES if (k, h) not in QUICK])
def test_daemon_start_on_a_damaged_state_file_slow(home, videos, monkeypatch, kind, how):
    daemon_case(home, videos, monkeypatch, kind, how)
