"""The metadata plugin on real files: exact facts, and one sentence for bad input."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest

from forgesyte.plugins.base import Context, PluginError
from forgesyte.plugins.builtin.metadata import MetadataPlugin
from tests.conftest import CLIPS


def ctx(tmp_path, progress=None):
    return Context(job_id="j", input_key="k", options={}, progress=progress or (lambda f: None),
                   artifact=lambda name: (tmp_path / name, name), logger=logging.getLogger("t"))


def test_mp4_facts(videos, tmp_path):
    seen = []
    report = MetadataPlugin().run(videos["clip.mp4"], ctx(tmp_path, seen.append))
    spec = CLIPS["clip.mp4"]
    assert report["video"]["frames"] == spec.frames and "frames_estimated" not in report["video"]
    assert report["video"]["fps"] == 25.0
    assert report["size_bytes"] == videos["clip.mp4"].stat().st_size
    assert seen[-1] == 1.0


def test_truncated_file_fails_readably(videos, tmp_path):
    data = videos["clip.mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(PluginError, match="not a decodable video"):
        MetadataPlugin().run(cut, ctx(tmp_path))


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=48000)
        s.layout = "mono"
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(PluginError, match="no video stream"):
        MetadataPlugin().run(path, ctx(tmp_path))


def test_garbage_fails_readably(tmp_path):
    path = tmp_path / "x.mov"
    path.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(PluginError) as info:
        MetadataPlugin().run(path, ctx(tmp_path))
    assert "\n" not in str(info.value)
