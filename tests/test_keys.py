"""The storage layer's key <-> path conversion refuses anything that leaves its root."""

from __future__ import annotations

import os

import pytest

from forgesyte.storage.paths import Root, UnsafeKey
from forgesyte.storage.results import ResultStore


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
    key = store.write(ResultStore.job_folder_key("cam1/clip.mp4", "abc"), {"x": 1})
    assert key == "cam1/clip.mp4-abc/results.json"
    assert store.read(key) == {"x": 1}
    assert not list(tmp_path.glob("escape*"))
