"""The plugin protocol. A plugin module imports this and nothing else of ForgeSyte.

A plugin is an object with `name`, `version`, `description`, `options` (or the
older `defaults`) and one of two ways to work:

* a frame plugin has `wants(video, ctx)` and `analyze(video, frames, ctx)`:
  the worker decodes the video once for every frame plugin of the job and
  hands each one the frames (or audio) it asked for, already scaled and
  converted by FFmpeg; see docs/plugins.md;
* a file plugin has `run(video_path, ctx)` and opens the file itself (for
  tools that need the file: a subprocess, another demuxer, a checksum).

Either returns a JSON-able dict: the plugin's section of the results
document. Raise `PluginError` for a failure the user should read (one
sentence); mark it `transient=True` when trying again later may succeed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from forgesyte.plugins.options import Option

__all__ = ["Audio", "AudioChunk", "Context", "FramePlugin", "Frames", "Option", "Plugin", "PluginError",
           "VideoInfo"]


class PluginError(Exception):
    """A failure with a readable message; `transient` asks for a later retry."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class Context:
    """What a running plugin may use: options, progress, artifacts, a logger.

    Built by the worker for each (job, plugin); plugins never construct one.
    """

    def __init__(
        self,
        *,
        job_id: str,
        input_key: str,
        options: Mapping[str, Any],
        progress: Callable[[float], None],
        artifact: Callable[[str], tuple[Path, str]],
        logger: logging.Logger,
    ):
        self.job_id = job_id
        self.input_key = input_key
        self.options = dict(options)
        self.log = logger
        self._progress = progress
        self._artifact = artifact
        self.artifacts: list[str] = []

    def progress(self, fraction: float) -> None:
        """Report progress of this plugin, 0.0 to 1.0 (cheap; throttled by the worker).
        In a shared decoding pass the pass reports progress itself and this is ignored."""
        self._progress(max(0.0, min(1.0, float(fraction))))

    def artifact(self, name: str) -> tuple[Path, str]:
        """A path to write an artifact file to, and its relative key (recorded for you).

        `name` may contain `/` for sub-folders; it cannot leave the job's folder.
        """
        path, key = self._artifact(name)
        self.artifacts.append(key)
        return path, key


# -- what a frame plugin asks for and gets ----------------------------------------------

@dataclass(frozen=True)
class Frames:
    """Which video frames a frame plugin wants, and in what form.

    `fps`: at most this many frames a second (the first frame at or after each
    multiple of 1/fps); `times`: the frames on screen at these times (seconds
    from the start); neither: every frame. `width`/`height`: scaled by FFmpeg
    (give one and the other follows the aspect ratio; rounded to even);
    `format`: any FFmpeg pixel format PyAV converts to an array ("rgb24",
    "bgr24", "gray", ...). When no plugin of the job needs every frame, the
    worker seeks instead of decoding everything.
    """

    fps: float | None = None
    times: Sequence[float] | None = None
    width: int | None = None
    height: int | None = None
    format: str = "rgb24"

    @property
    def every_frame(self) -> bool:
        return self.fps is None and self.times is None


@dataclass(frozen=True)
class Audio:
    """The audio track, resampled by FFmpeg: `rate` Hz, `layout` ("mono", "stereo")."""

    rate: int = 16000
    layout: str = "mono"


@dataclass(frozen=True)
class VideoInfo:
    """Facts about the input known before decoding (from the container)."""

    path: Path
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    frames: int  # the container's count, or duration x fps (an estimate)
    has_audio: bool


@dataclass
class AudioChunk:
    """`samples`: float32 array shaped (channels, n); `time_s`: when the chunk starts."""

    time_s: float
    rate: int
    samples: Any


class Plugin:
    """Convenience base class for a file plugin; any object with the same attributes works.

    `options` maps option names to `Option(type, default, ...)`; `cost` is the
    plugin's expected run time relative to one decode of the video (progress
    is weighted by it).
    """

    name: str = ""
    version: str = "0"
    description: str = ""
    options: Mapping[str, Option] = {}
    defaults: Mapping[str, Any] = {}
    cost: float = 1.0

    def run(self, video: Path, ctx: Context) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


class FramePlugin:
    """Base class for a frame plugin: the worker's one decoding pass feeds it.

    `cost` here is the plugin's own work on top of the shared decode, as a
    fraction of one decode of the video.
    """

    name: str = ""
    version: str = "0"
    description: str = ""
    options: Mapping[str, Option] = {}
    defaults: Mapping[str, Any] = {}
    cost: float = 0.1

    def wants(self, video: VideoInfo, ctx: Context) -> Frames | Audio | None:
        """What to feed `analyze`; None: nothing (only `video`)."""
        return Frames()

    def run(self, video: Path, ctx: Context) -> dict[str, Any]:
        """This plugin alone, in a decoding pass of its own (tests, benchmarks, scripts);
        the worker never calls it: it runs every frame plugin of a job in one pass."""
        from forgesyte.plugins.pipeline import run_alone

        return run_alone(self, Path(video), ctx)

    def analyze(self, video: VideoInfo, frames: Iterator[Any], ctx: Context) -> dict[str, Any]:  # pragma: no cover
        """Iterate `frames` (each a `Frame`: `.array`, `.time_s`, `.index`, `.image()`,
        `.av`; or an `AudioChunk` when `wants` returned `Audio`) and return the section.
        Stopping early is fine: the pass stops feeding this plugin."""
        raise NotImplementedError


def is_frame_plugin(plugin: Any) -> bool:
    return callable(getattr(plugin, "analyze", None))
