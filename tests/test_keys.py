"""The storage layer's key <-> path conversion: lossless for any name, and it refuses
anything that leaves its root (test_names.py generates names; these are the examples)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from forgesyte.storage import layout
from forgesyte.storage.paths import (Root, UnsafeKey, bytes_from_key, canonical_key, key_from_bytes,
                                     key_spellings, redact)
from forgesyte.storage.results import ResultStore
from forgesyte.text import display


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root" / "cam1").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return Root(tmp_path / "root")


def test_round_trip(root):
    path = root.path_for("cam1/clip.mp4")
    assert path == root.path / "cam1" / "clip.mp4"
    assert root.key_for(path) == "cam1/clip.mp4"


@pytest.mark.parametrize("key", [
    "../etc/passwd", "cam1/../../x", "/etc/passwd", "", "cam1//x", "./x", "cam1/.", "a/..", "x\x00y",
])
def test_refuses_escaping_or_malformed_keys(root, key):
    with pytest.raises(UnsafeKey):
        root.path_for(key)


def test_refuses_symlink_escape(root, tmp_path):
    os.symlink(tmp_path / "outside", root.path / "link")
    with pytest.raises(UnsafeKey, match="symlink"):
        root.path_for("link/secret.mp4")
    os.symlink(tmp_path / "outside" / "f.mp4", root.path / "f.mp4")
    with pytest.raises(UnsafeKey):
        root.path_for("f.mp4")


def test_refusals_name_keys_not_absolute_paths(root, tmp_path):
    """Refusal messages end up in job errors and so in the state: they hold the key (or the
    file's own name), never an absolute path of this machine (issue 9, item 8)."""
    os.symlink(tmp_path / "outside", root.path / "link")
    (tmp_path / "outside" / "f.mp4").write_bytes(b"x")
    (tmp_path / "outside" / "secret.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "outside" / "f.mp4", root.path / "f.mp4")
    refusals = []
    for call in (lambda: root.path_for("link/secret.mp4"), lambda: root.path_for("f.mp4"),
                 lambda: root.stat_key("f.mp4"), lambda: root.stat_key("link/secret.mp4"),
                 lambda: root.key_for(tmp_path / "outside" / "x.mp4"), lambda: root.key_for(tmp_path)):
        with pytest.raises(UnsafeKey) as caught:
            call()
        refusals.append(str(caught.value))
    for message in refusals:
        assert str(tmp_path) not in message and "/outside" not in message, message


def test_symlink_inside_is_fine(root):
    os.symlink(root.path / "cam1", root.path / "alias")
    assert root.path_for("alias/x.mp4") == root.path / "alias" / "x.mp4"


def test_key_for_refuses_outside_paths(root, tmp_path):
    for path in (tmp_path / "outside" / "x", root.path, tmp_path):
        with pytest.raises(UnsafeKey):
            root.key_for(path)


def test_result_store_never_writes_outside(tmp_path):
    store = ResultStore(tmp_path / "out")
    with pytest.raises(UnsafeKey):
        store.write("../escape", {"x": 1})
    with pytest.raises(UnsafeKey):
        store.artifact("ok-123", "plugin", "../../../escape.jpg")
    key = store.write(ResultStore.job_folder_key("cam1/clip.mp4", "01m88bakr04qgnxh"), {"x": 1})
    assert key == "cam1/2026-11-25/clip.mp4-01m88bakr04qgnxh/results.json"
    assert store.read(key) == {"x": 1}
    assert not list(tmp_path.glob("escape*"))


@pytest.mark.parametrize("key", ["1:23.mp4", "C:/clip.mp4", "a:b/c:d.mp4", "-rf.mp4", "C:\\clip.mp4"])
def test_colons_and_dashes_are_ordinary_names(root, key):
    """Issue 9: `:` as the second character was refused as a Windows drive letter."""
    path = root.path_for(key)
    assert path == root.path / key
    assert root.key_for(path) == key


@pytest.mark.parametrize("raw, key", [
    (b"\xff\xfe.mp4", "\\xff\\xfe.mp4"),
    (b"caf\xe9.mp4", "caf\\xe9.mp4"),
    (b"C:\\new.mp4", "C:\\new.mp4"),            # a lone backslash stays single
    (b"a\\x41.mp4", "a\\\\x41.mp4"),          # ...unless it would read as an escape
    (b"a\\\\b.mp4", "a\\\\\\b.mp4"),
    (b"new\nline\x1b.mp4", "new\nline\x1b.mp4"),  # valid UTF-8 stays (keys are data)
])
def test_key_spelling_of_bytes(root, raw, key):
    assert key_from_bytes(raw) == key
    assert bytes_from_key(key) == raw
    (root.path / os.fsdecode(raw)).write_bytes(b"x")
    assert root.key_for(os.path.join(os.fsencode(root.path), raw)) == key
    assert root.path_for(key).read_bytes() == b"x"
    assert os.fsencode(root.path_for(key).name) == raw


@pytest.mark.parametrize("key", ["a\\x41.mp4", "\\u0041", "x\\x2f..", "\\x00"])
def test_non_canonical_spellings_are_not_keys(root, key):
    """Only the canonical spelling is a key: `\\x2f` cannot smuggle a `/` in, `\\x00` a NUL."""
    with pytest.raises(UnsafeKey):
        root.path_for(key)


def test_shown_forms_and_raw_bytes_lead_to_the_key():
    key = key_from_bytes(b"\xff\n\x1b[2J.mp4")
    shown = display(key)
    assert "\n" not in shown and "\x1b" not in shown and shown == "\\xff\\x0a\\x1b[2J.mp4"
    assert canonical_key(shown) == key
    assert key_spellings(shown)[0] == key
    assert key in key_spellings(os.fsdecode(b"\xff\n\x1b[2J.mp4"))


def test_redact_cuts_roots_and_surrogates(tmp_path):
    out = Root(tmp_path / "out")
    text = f"[Errno 36] File name too long: '{out.path}/2026-01-01/x/results.json' \udcff"
    assert redact(text, out) == "[Errno 36] File name too long: '2026-01-01/x/results.json' \\xff"
    assert str(tmp_path) not in redact(text, out)


def _job_folder(root: Path, key: str, job_id: str) -> Path:
    folder = root / key
    (folder / "thumbnails").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"job_id": job_id}))
    (folder / "thumbnails" / "0001.jpg").write_bytes(b"jpg")
    return folder


def test_removing_a_job_folder_keeps_another_job_nested_in_it(tmp_path):
    """Issue 9: the old layout (`<input key>-<id>/`) let an inbox folder named like a job folder
    nest a second job's results inside the first; pruning the first with --outputs deleted them.
    Such folders still exist in outputs written before; removal must spare the inner job."""
    store = ResultStore(tmp_path / "out")
    outer = _job_folder(store.root.path, "plain.mp4-01m88bakr04qgnxh", "01m88bakr04qgnxh")
    inner = _job_folder(store.root.path, "plain.mp4-01m88bakr04qgnxh/inner.mp4-01m88bakr04qgnxj",
                        "01m88bakr04qgnxj")
    pending = outer / "deeper" / "x.mp4-01m88bakr04qgnxk"  # another job's folder, no results yet
    pending.mkdir(parents=True)
    (pending / "partial.jpg").write_bytes(b"p")
    store.remove_job_folder("plain.mp4-01m88bakr04qgnxh/results.json")
    assert not (outer / "results.json").exists() and not (outer / "thumbnails").exists()
    assert (inner / "results.json").is_file() and (inner / "thumbnails" / "0001.jpg").is_file()
    assert (pending / "partial.jpg").is_file()
    store.remove_job_folder("plain.mp4-01m88bakr04qgnxh/inner.mp4-01m88bakr04qgnxj/results.json")
    assert not inner.exists()


def test_new_layout_folders_are_flat_and_bounded():
    long_name = "L" * 251 + ".mp4"
    keys = {layout.job_folder_key(name, "01m88bakr04qgnx" + c)
            for name, c in [(long_name, "a"), ("plain.mp4-01m88bakr04qgnxh/inner.mp4", "b"),
                            ("inner.mp4", "c"), ("cam/.hidden\n\x1b.mp4", "d"), ("-rf.mp4", "e")]}
    assert len(keys) == 5
    for key in keys:
        *source, date, name = key.split("/")
        assert len(source) <= 1 and all(len(s.encode()) <= 120 for s in source)
        assert date == "2026-11-25" and len(name.encode()) <= 120 + 1 + 16
        for part in source + [name]:
            assert not part.startswith((".", "-")) and "\n" not in part and "\x1b" not in part
    # Grouped by the inbox folder the file came through (one level only), else not at all.
    assert layout.job_folder_key("cam1/a/b/c.mp4", "01m88bakr04qgnxh") == "cam1/2026-11-25/c.mp4-01m88bakr04qgnxh"
    assert layout.job_folder_key("c.mp4", "01m88bakr04qgnxh") == "2026-11-25/c.mp4-01m88bakr04qgnxh"
    assert layout.job_folder_key("a.mp4", "not-a-ulid") == "undated/a.mp4-not-a-ulid"
