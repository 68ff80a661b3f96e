"""Helpers shared by the built-in plugins: open a video, count frames, time a frame."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import av

from forgesyte.plugins.base import PluginError


def open_video(video: Path, threaded: bool = True):
    """(container, first video stream), or a readable PluginError. `threaded`: frame and
    slice threads for whole-file passes; off when only the first frame is wanted."""
    try:
        container = av.open(str(video))
    except av.error.FFmpegError as exc:
        raise PluginError(f"The file is not a decodable video ({reason(exc)}).") from None
    if not container.streams.video:
        container.close()
        raise PluginError("The file has no video stream.")
    stream = container.streams.video[0]
    if threaded:
        stream.thread_type = "AUTO"
    return container, stream


def expected_frames(container, stream) -> int:
    """The container's frame count, or duration x fps; for progress only."""
    if stream.frames:
        return stream.frames
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    duration = container.duration / 1_000_000 if container.duration else 0
    return max(1, int(duration * rate))


def frame_time(frame, stream) -> float:
    """Presentation time in seconds from the start of the stream."""
    if frame.pts is None:
        return float(frame.time or 0.0)
    start = stream.start_time or 0
    return float((frame.pts - start) * stream.time_base)


def decode(container, stream) -> Iterator:
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as exc:
        raise PluginError(f"The video stream cannot be decoded ({reason(exc)}).") from None


def reason(exc: Exception) -> str:
    return (getattr(exc, "strerror", None) or str(exc)).rstrip(".")
