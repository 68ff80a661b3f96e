"""Generated names, not examples: any name a Linux filesystem allows goes through the
whole path of a file in process (the key codec, the selection, the scan, the intake, the
job store, the output layout, the CLI's JOB resolution) on real files in a real inbox.

Names are arbitrary bytes (no `/`, no NUL) up to 255 bytes, biased towards what broke the
daemon before: invalid UTF-8, newlines and ESC sequences, backslashes that look like
escapes, `:`, leading `-`, dots, and names shaped like job ids and job folders.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from forgesyte.cli import UserError, _resolve
from forgesyte.config import load_settings, prepare_directories
from forgesyte.daemon.intake import Intake
from forgesyte.daemon.selection import Selection
from forgesyte.daemon.watch import FILE, scan
from forgesyte.storage import layout
from forgesyte.storage.jobs import JobStore
from forgesyte.storage.paths import Root, bytes_from_key, canonical_key, key_from_bytes, key_spellings
from forgesyte.storage.results import ResultStore
from forgesyte.text import UNSAFE, display
from tests.conftest import wait_until

NAME_MAX = 255

# Pieces that broke things, mixed with arbitrary bytes.
PIECES = [b"\xff", b"\xfe", b"\xe9", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\n", b"\r", b"\t",
          b"\x1b]0;pwned\x07", b"\x1b[2J", b"\x7f", "\u202e".encode(), "\u0085".encode(), b"\\",
          b"\\x41", b"\\\\", b"\\u00e9", b"x41", b":", b"1:23", b"C:", b"-", b"--help", b".", b"..",
          b" ", b"~", b"*", b"?", b"[", b"01m88bakr04qgnxh", b".mp4-01m88bakr04qgnxh", "é".encode(),
          "日本".encode(), "🎬".encode(), b"a", b"clip"]
VIDEO_EXTS = [b".mp4", b".MKV", b".webm", b".mov", b".Mp4"]


def _clean(raw: bytes) -> bytes:
    return raw.replace(b"/", b"_").replace(b"\x00", b"_")


stems = st.one_of(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map(b"".join),
    st.binary(min_size=1, max_size=40),
    st.binary(min_size=200, max_size=255),  # long names: the output folder must still fit
).map(_clean)


@st.composite
def file_names(draw) -> bytes:
    ext = draw(st.sampled_from(VIDEO_EXTS))
    stem = draw(stems)[: NAME_MAX - len(ext)]
    name = stem + ext
    assume(name not in (b".", b".."))
    return name


folder_names = stems.map(lambda raw: raw[:NAME_MAX]).filter(lambda raw: raw not in (b".", b".."))


@st.composite
def trees(draw) -> list[bytes]:
    """Relative paths (bytes) of files, in folders up to three deep; no path is both."""
    paths: list[bytes] = []
    folders = draw(st.lists(st.lists(folder_names, max_size=3), min_size=1, max_size=4))
    for parts in folders:
        for name in draw(st.lists(file_names(), min_size=1, max_size=3)):
            paths.append(b"/".join([*parts, name]))
    files = set(paths)
    # A path that is another's folder cannot also be a file.
    return sorted(p for p in files if not any(q.startswith(p + b"/") for q in files))


def test_codec_round_trips_any_bytes():
    @given(st.binary(max_size=300))
    @settings(max_examples=600, deadline=None)
    def check(raw):
        key = key_from_bytes(raw)
        key.encode("utf-8")  # valid Unicode: no lone surrogate, so every JSON holding it is valid
        assert bytes_from_key(key) == raw
        assert canonical_key(key) == key
        shown = display(key)
        assert not UNSAFE.search(shown)
        assert canonical_key(shown) == key  # what people see leads back to the name
        if raw.isascii() and b"\\" not in raw:
            assert key == raw.decode()  # plain names are their own key
    check()


def test_key_of_a_path_is_the_keys_of_its_parts_joined():
    @given(st.lists(st.binary(min_size=1, max_size=30).map(_clean), min_size=1, max_size=4))
    @settings(max_examples=200, deadline=None)
    def check(parts):
        assert key_from_bytes(b"/".join(parts)) == "/".join(key_from_bytes(p) for p in parts)
    check()


def _make_tree(inbox: Path, paths: list[bytes], data: bytes) -> list[bytes]:
    made = []
    base = os.fsencode(inbox)
    for rel in paths:
        full = os.path.join(base, rel)
        try:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as fh:
                fh.write(data + rel)  # distinct content: no duplicates
        except (NotADirectoryError, FileExistsError, IsADirectoryError):
            continue  # a generated folder name equals a generated file name
        except OSError as exc:  # ENAMETOOLONG for a whole path past PATH_MAX: not a name problem
            if exc.errno == 36:
                continue
            raise
        made.append(rel)
    return made


@given(paths=trees())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_tree_becomes_one_job_per_file_with_separate_output_folders(paths):
    top = Path(tempfile.mkdtemp(prefix="names-"))
    try:
        _check_tree(top, paths)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _check_tree(top: Path, paths: list[bytes]) -> None:
    config = load_settings({"home": top / "home"}, env={}).with_overrides(settle_seconds=0.0)
    prepare_directories(config, create=True)
    inbox = Root(config.inbox)
    made = _make_tree(config.inbox, paths, b"video bytes ")
    selection = Selection(config.video_extensions, config.ignore_patterns)

    # The selection takes exactly the files without an ignored component.
    keys = sorted(scan(inbox, selection))
    expected = {key_from_bytes(rel) for rel in made}
    for rel in made:
        key = key_from_bytes(rel)
        hidden = any(selection.ignored(part) for part in key.split("/"))
        assert (key in keys) == (not hidden), (rel, key)
        assert os.path.samefile(inbox.path_for(key), os.path.join(os.fsencode(inbox.path), rel))
        assert inbox.key_for(os.path.join(os.fsencode(inbox.path), rel)) == key
    assert set(keys) <= expected

    # Intake: one job per file, whatever its name.
    store = JobStore(config.state, autoflush=False)
    intake = Intake(config, inbox, store, scan_dir=lambda key: None)
    try:
        events: "queue.Queue[tuple[str, str]]" = queue.Queue()
        for key in keys:
            events.put((FILE, key))
        intake.drain(events)
        created: list[str] = []
        deadline = time.monotonic() + 30
        while not intake.idle or len(created) < len(keys):
            created += [job_id for job_id, new in intake.step() if new]
            assert time.monotonic() < deadline, "intake did not take every file"
            time.sleep(0.005)
        store.flush()
        jobs = [store.get(job_id) for job_id in created]
        assert sorted(job["input"] for job in jobs) == keys  # one job per file, none twice

        # Output folders: at most three levels deep, within NAME_MAX, never shared, never nested.
        results = ResultStore(config.output)
        folders = [layout.job_folder_key(job["input"], job["id"]) for job in jobs]
        assert len(set(folders)) == len(folders)
        for folder in folders:
            *source, date, name = folder.split("/")
            assert len(source) <= 1
            for part in source + [name]:
                assert len(part.encode("utf-8")) <= NAME_MAX
                assert not part.startswith((".", "-")) and not UNSAFE.search(part)
            results.write(folder, {"job_id": folder.rsplit("-", 1)[1]})
        for a in folders:
            assert not any(b.startswith(a + "/") for b in folders)

        # The CLI's JOB finds each job by its key, by what people are shown, and by the raw bytes.
        reader = JobStore(config.state, readonly=True)
        for job in jobs:
            raw = bytes_from_key(job["input"])
            for ref in (job["input"], display(job["input"]), os.fsdecode(raw)):
                try:
                    found = _resolve(reader, ref, config)
                except UserError as exc:
                    pytest.fail(f"{ref!r} ({raw!r}) did not resolve: {exc.format_message()}")
                assert found["id"] == job["id"], (ref, raw)
            assert key_spellings(os.fsdecode(raw))[-1] == job["input"]
    finally:
        intake.close()
        store.close()


# -- the worst cases, through a real daemon -------------------------------------------

FORGED = "2026-01-01 00:00:00,000 INFO forgesyte.daemon: job FORGED"
WORST = {  # raw name -> why it is here
    b"\xff\xfe latin1 caf\xe9.mp4": "not UTF-8 (crashed the daemon, in a restart loop)",
    ("evil.mp4\n" + FORGED + " \x1b]0;pwned\x07\x1b[2J.mp4").encode(): "forges a log line, drives a terminal",
    b"L" * 251 + b".mp4": "255 bytes: the output folder overflowed NAME_MAX",
    b"1:23.mp4": "':' as the second character was taken for a drive letter",
    b"C:/clip.mp4": "the same, in a folder",
    b"-rf \\x41 .mp4": "a leading '-' and a backslash that looks like an escape",
}


def _controls(text: str) -> set[str]:
    return {c for c in text if c != "\n" and UNSAFE.match(c)}


def _show(home, ref, *flags):
    """`show` with `--` before JOB, as a user types it for a name that starts with '-'."""
    return home.cli("show", *flags, "--", ref)


def _show_json(home, ref):
    proc = _show(home, ref, "--json")
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_worst_names_through_a_real_daemon(home, videos):
    data = videos["clip.mp4"].read_bytes()
    proc = home.start()
    home.drop(videos["clip.mp4"], "plain.mp4")
    plain = home.wait_status("plain.mp4")
    assert plain["status"] == "completed"
    # A folder named like plain.mp4's output folder (that nested results in it before).
    shaped = f"plain.mp4-{plain['id']}/inner.mp4".encode()
    inbox = os.fsencode(home.inbox)
    for i, raw in enumerate([*WORST, shaped]):
        path = os.path.join(inbox, raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data + b"%d" % i)
    keys = {raw: key_from_bytes(raw) for raw in [*WORST, shaped]}

    def finished():
        done = {j["input"]: j for j in home.jobs() if j["status"] in ("completed", "failed")}
        return done if set(keys.values()) <= set(done) else None
    done = wait_until(finished, 90, f"every job to finish\n{home.log_text()}", 0.3)
    for raw, key in keys.items():
        assert done[key]["status"] == "completed", (WORST.get(raw, "job-folder shape"), done[key])
    assert proc.poll() is None, "the daemon died"

    jobs = {job["input"]: job for job in home.jobs()}
    assert len(jobs) == len(keys) + 1  # one job each, plain.mp4 included
    folders = [job["output"].rsplit("/", 1)[0] for job in jobs.values()]
    for a in folders:
        assert not any(b.startswith(a + "/") for b in folders), "a job folder inside another"
        assert len(Path(a).parts) in (2, 3)  # [source/]date/name-id
    for job in jobs.values():
        assert (home.output / job["output"]).is_file()

    # People see escapes, never the raw characters; what they see leads back to the job.
    listing = home.cli("list", check=True).stdout
    assert not _controls(listing), _controls(listing)
    for raw, key in keys.items():
        shown = _show(home, display(key))  # what people see, typed back
        assert shown.returncode == 0, (raw, shown.stderr)
        assert not _controls(shown.stdout) and display(key) in shown.stdout
        for ref in (key, raw):  # the JSON form, and the raw bytes of the name
            assert _show_json(home, ref)["id"] == jobs[key]["id"], (raw, ref)
    log = home.log_text()
    assert not _controls(log), _controls(log)
    assert not any(line.startswith(FORGED) for line in log.splitlines())
    assert home.stop(proc) == 0
