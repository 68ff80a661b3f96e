"""Built-in analysis plugins against generated videos with known ground truth."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from forgesyte.plugins.base import Context, PluginError
from forgesyte.plugins.builtin.faces import FacesPlugin
from forgesyte.plugins.builtin.motion import MotionPlugin
from forgesyte.plugins.builtin.scenes import ScenesPlugin
from forgesyte.plugins.builtin.thumbnails import ThumbnailsPlugin
from tests.videogen import VideoSpec, make_video

DATA = Path(__file__).parent / "data"


def ctx(tmp_path, **options):
    out = tmp_path / "artifacts"

    def artifact(name):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, f"job/{name}"
    return Context(job_id="j", input_key="k", options=options, progress=lambda f: None,
                   artifact=artifact, logger=logging.getLogger("test"))


def blocks(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)


# -- scenes -----------------------------------------------------------------

CUTS = [25, 60, 100, 130]  # 0-based first frames of new shots, at 25 fps


def shots_frame(i: int, spec: VideoSpec) -> np.ndarray:
    h, w = spec.height, spec.width
    if i < 25:
        return blocks(1, h, w)
    if i < 60:
        return blocks(2, h, w)
    if i < 100:  # a slow pan across a wide picture: motion, no cut
        wide = blocks(3, h, 2 * w)
        return np.ascontiguousarray(wide[:, (i - 60) * 2:(i - 60) * 2 + w])
    if i < 130:  # sensor noise over a still picture: no cut
        rng = np.random.default_rng(i)
        return np.clip(blocks(4, h, w).astype(int) + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    if i < 160:
        return blocks(5, h, w)
    # a 25-frame dissolve into another shot: gradual, not a hard cut
    a, b = blocks(5, h, w).astype(float), blocks(6, h, w).astype(float)
    alpha = min(1.0, (i - 160) / 25)
    return ((1 - alpha) * a + alpha * b).astype(np.uint8)


@pytest.fixture(scope="module")
def cuts_video(tmp_path_factory):
    spec = VideoSpec(width=320, height=240, fps=25, seconds=8.0, audio=None)
    return make_video(tmp_path_factory.mktemp("scenes") / "cuts.mp4", spec, shots_frame), spec


def test_scenes_finds_each_hard_cut_within_one_frame_and_nothing_else(cuts_video, tmp_path):
    video, spec = cuts_video
    result = ScenesPlugin().run(video, ctx(tmp_path))
    found = [c["frame"] for c in result["cuts"]]
    assert len(found) == len(CUTS), result["cuts"]
    for expected, got in zip(CUTS, found):
        assert abs(expected - got) <= 1
    for cut in result["cuts"]:
        assert abs(cut["time_s"] - cut["frame"] / spec.fps) < 0.02
    scenes = result["scenes"]
    assert len(scenes) == len(result["cuts"]) + 1
    assert scenes[0]["start_s"] == 0 and abs(scenes[-1]["end_s"] - spec.seconds) < 0.05
    assert all(a["end_s"] == b["start_s"] for a, b in zip(scenes, scenes[1:]))


def test_scenes_on_a_clip_without_cuts(videos, tmp_path):
    result = ScenesPlugin().run(videos["clip.mp4"], ctx(tmp_path))
    assert result["cuts"] == [] and len(result["scenes"]) == 1


# -- motion -----------------------------------------------------------------

MOTION = [(1.0, 2.0), (3.0, 3.5)]  # seconds in which the square moves


def motion_frame(i: int, spec: VideoSpec) -> np.ndarray:
    t = i / spec.fps
    frame = np.full((spec.height, spec.width, 3), 40, dtype=np.uint8)
    x = 20
    for start, end in MOTION:
        if t >= end:
            x += int((end - start) * spec.fps) * 6
        elif t > start:
            x += int((t - start) * spec.fps) * 6
    x %= spec.width - 40
    frame[100:140, x:x + 40] = 230
    return frame


def test_motion_intervals_match_ground_truth(tmp_path):
    spec = VideoSpec(width=320, height=240, fps=25, seconds=5.0, audio=None)
    video = make_video(tmp_path / "motion.mp4", spec, motion_frame)
    result = MotionPlugin().run(video, ctx(tmp_path))
    got = [(i["start_s"], i["end_s"]) for i in result["intervals"]]
    assert len(got) == len(MOTION), result
    for (start, end), (g_start, g_end) in zip(MOTION, got):
        assert abs(start - g_start) <= 0.1 and abs(end - g_end) <= 0.1
    assert all(i["peak"] > result["threshold"] for i in result["intervals"])


def test_motion_none_on_a_still_picture(tmp_path):
    spec = VideoSpec(width=160, height=120, fps=25, seconds=2.0, audio=None)
    video = make_video(tmp_path / "still.mp4", spec, lambda i, s: blocks(9, s.height, s.width))
    assert MotionPlugin().run(video, ctx(tmp_path))["intervals"] == []


# -- thumbnails -------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_thumbnails_and_contact_sheet(videos, tmp_path, fmt):
    result = ThumbnailsPlugin().run(videos["clip.mp4"], ctx(tmp_path, count=4, width=160, format=fmt, columns=2))
    assert len(result["thumbnails"]) == 4
    times = [t["time_s"] for t in result["thumbnails"]]
    assert times == sorted(times) and times[0] < 0.5 and times[-1] > 1.5  # spread over the 2 s clip
    for thumb in result["thumbnails"]:
        image = cv2.imread(str(tmp_path / "artifacts" / thumb["key"].split("/", 1)[1]))
        assert image is not None and image.shape[1] == 160 and image.shape[0] == 120
        assert thumb["key"].endswith("." + fmt)
    sheet = cv2.imread(str(tmp_path / "artifacts" / result["contact_sheet"].split("/", 1)[1]))
    assert sheet.shape[:2] == (240, 320)  # 2 rows x 2 columns of 160x120


def test_thumbnails_reject_unknown_format(videos, tmp_path):
    with pytest.raises(PluginError, match="not one of"):
        ThumbnailsPlugin().run(videos["clip.mp4"], ctx(tmp_path, format="bmp"))


# -- faces ------------------------------------------------------------------

def test_faces_on_a_real_photo_then_an_empty_scene(tmp_path):
    photo = cv2.cvtColor(cv2.imread(str(DATA / "astronaut.jpg")), cv2.COLOR_BGR2RGB)
    spec = VideoSpec(width=320, height=320, fps=10, seconds=4.0, audio=None)
    video = make_video(tmp_path / "face.mp4", spec,
                       lambda i, s: photo if i < 20 else np.full_like(photo, 90))
    result = FacesPlugin().run(video, ctx(tmp_path, interval_s=1.0))
    counts = [s["count"] for s in result["samples"]]
    assert counts == [1, 1, 0, 0], result["samples"]
    x, y, w, h = result["samples"][0]["boxes"][0]
    # tests/data/README.md: x=110, y=41, 60x60; BlazeFace's box starts at the brows, ~10 px lower
    assert abs(x - 110) <= 8 and abs(y - 41) <= 14 and abs(w - 60) <= 10 and abs(h - 60) <= 10
    assert result["samples"][0]["scores"][0] > 0.85
    assert result["max_count"] == 1 and result["frames_with_faces"] == 2


def smiley(size: int = 320) -> np.ndarray:
    """A cartoon face: the kind of picture the old Haar cascade fired on."""
    image = np.full((size, size, 3), 230, np.uint8)
    cv2.circle(image, (size // 2, size // 2), size // 3, (255, 220, 0), -1)
    for dx in (-35, 35):
        cv2.circle(image, (size // 2 + dx, size // 2 - 30), 12, (0, 0, 0), -1)
    cv2.ellipse(image, (size // 2, size // 2 + 30), (50, 25), 0, 0, 180, (0, 0, 0), 6)
    return image


def test_faces_finds_none_on_non_faces(tmp_path):
    photo = cv2.cvtColor(cv2.imread(str(DATA / "astronaut.jpg")), cv2.COLOR_BGR2RGB)
    pictures = [smiley(), blocks(3, 320, 320), photo[200:, :].repeat(2, 0)[:320],  # a cartoon, texture, a body
                np.full((320, 320, 3), 90, np.uint8)]
    spec = VideoSpec(width=320, height=320, fps=4, seconds=4.0, audio=None)
    video = make_video(tmp_path / "nonfaces.mp4", spec, lambda i, s: np.ascontiguousarray(pictures[i // 4]))
    result = FacesPlugin().run(video, ctx(tmp_path, interval_s=1.0))
    assert [s["count"] for s in result["samples"]] == [0, 0, 0, 0], result["samples"]


def test_faces_grid_finds_two_small_faces_in_a_wide_frame(tmp_path):
    photo = cv2.cvtColor(cv2.imread(str(DATA / "astronaut.jpg")), cv2.COLOR_BGR2RGB)
    frame = np.full((720, 1280, 3), 60, np.uint8)
    frame[200:520, 100:420] = photo
    frame[200:520, 860:1180] = photo[:, ::-1]
    spec = VideoSpec(width=1280, height=720, fps=2, seconds=1.0, audio=None)
    video = make_video(tmp_path / "wide.mp4", spec, lambda i, s: frame)
    plain = FacesPlugin().run(video, ctx(tmp_path, interval_s=1.0))
    assert plain["max_count"] == 0  # 60 px faces are under a tenth of a 1280 px frame
    tiled = FacesPlugin().run(video, ctx(tmp_path, interval_s=1.0, grid=4))
    boxes = sorted(tiled["samples"][0]["boxes"])
    assert len(boxes) == 2, tiled
    assert abs(boxes[0][0] - 212) <= 12 and abs(boxes[1][0] - 1010) <= 16  # mirrored: 860 + 320 - 112 - 59
    assert all(abs(b[1] - 251) <= 14 and abs(b[2] - 60) <= 12 for b in boxes)


def test_faces_model_is_checked_before_use(tmp_path, monkeypatch):
    from forgesyte.plugins import models

    monkeypatch.setitem(models.SHA256, "face_detection_short_range.tflite", "0" * 64)
    monkeypatch.setattr(models, "_verified", set())
    with pytest.raises(PluginError, match="damaged"):
        models.model_path("face_detection_short_range.tflite")


def test_faces_with_glasses(tmp_path):
    """Glasses drawn over the astronaut's eyes: the old Haar cascade (faces 1.0) found no
    face here; BlazeFace does."""
    photo = cv2.cvtColor(cv2.imread(str(DATA / "astronaut.jpg")), cv2.COLOR_BGR2RGB)
    for cx in (128, 156):
        cv2.circle(photo, (cx, 78), 10, (10, 10, 10), 3)
    cv2.line(photo, (138, 78), (146, 78), (10, 10, 10), 3)
    haar = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    assert len(haar.detectMultiScale(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(24, 24))) == 0
    spec = VideoSpec(width=320, height=320, fps=2, seconds=1.0, audio=None)
    video = make_video(tmp_path / "glasses.mp4", spec, lambda i, s: photo)
    result = FacesPlugin().run(video, ctx(tmp_path, interval_s=1.0))
    assert result["samples"][0]["count"] == 1, result
    x, y, w, h = result["samples"][0]["boxes"][0]
    assert abs(x - 110) <= 8 and abs(y - 41) <= 14
