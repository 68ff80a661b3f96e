"""One decoding pass for every frame plugin of a job.

Each frame plugin says what it wants (`Frames` or `Audio`, see base.py) and
gets an iterator; the pass decodes the video once (FFmpeg's own threads) and
feeds each plugin, in a thread of its own, the frames it asked for. The
plugin's thread converts its frames (FFmpeg swscale, through a reformatter
of its own, so threads never share one), so scaling and colour conversion
run in parallel with decoding. Queues are short: the slowest plugin sets the
pace and memory stays at a few frames per plugin.

When no plugin needs every frame (thumbnails, a 1 fps sampler), the pass
seeks to each wanted time instead of decoding everything, unless the
keyframes it has seen are further apart than the gap (then decoding forward
is cheaper). Audio is decoded in a thread of its own from a second demuxer,
resampled by FFmpeg's swresample.

A plugin that raises, or returns early, stops being fed; the others go on.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import av
from av.video.reformatter import VideoReformatter

from forgesyte.plugins.base import Audio, AudioChunk, Context, Frames, PluginError, VideoInfo
from forgesyte.plugins.builtin._video import expected_frames, frame_time, open_video, reason
from forgesyte.plugins.options import defaults_of

BATCH = 4             # frames handed over at a time
QUEUE_BATCHES = 2     # batches waiting per plugin: at most 12 frames in flight each
STUCK_AFTER = 1.0     # seconds one frame may take before the plugin is named as the one running
_END = object()


def even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def scaled_size(width: int, height: int, want_w: int | None, want_h: int | None) -> tuple[int, int]:
    """(w, h) for a request: one side given keeps the aspect ratio; both even."""
    if want_w and want_h:
        return even(want_w), even(want_h)
    if want_w:
        return even(want_w), even(want_w * height / max(1, width))
    if want_h:
        return even(want_h * width / max(1, height)), even(want_h)
    return width, height


class Frame:
    """A decoded frame as one plugin sees it (see `FramePlugin.analyze`)."""

    __slots__ = ("_array", "_formatters", "_request", "av", "index", "time_s")

    def __init__(self, frame: av.VideoFrame, index: int, time_s: float, request: Frames,
                 formatters: dict[tuple, VideoReformatter]):
        self.av = frame
        self.index = index
        self.time_s = time_s
        self._request = request
        self._formatters = formatters
        self._array = None

    @property
    def key_frame(self) -> bool:
        return bool(self.av.key_frame)

    @property
    def array(self) -> Any:
        """The frame as the plugin's `Frames` request asked (size and pixel format)."""
        if self._array is None:
            r = self._request
            self._array = self.image(r.width, r.height, r.format)
        return self._array

    def image(self, width: int | None = None, height: int | None = None, format: str = "rgb24") -> Any:
        """The frame as a NumPy array, scaled and converted by FFmpeg."""
        w, h = scaled_size(self.av.width, self.av.height, width, height)
        key = (w, h, format)
        formatter = self._formatters.get(key)
        if formatter is None:
            formatter = self._formatters[key] = VideoReformatter()
        # Shrinking: FFmpeg's area averaging (cheaper than bilinear at large ratios, and it
        # averages noise away instead of sampling it).
        interpolation = "AREA" if w < self.av.width and h < self.av.height else None
        return formatter.reformat(self.av, width=w, height=h, format=format,
                                  interpolation=interpolation).to_ndarray()


@dataclass
class Consumer:
    """One plugin in the pass: its request, its queue, its thread, its outcome."""

    name: str
    plugin: Any
    ctx: Context
    request: Frames | Audio | None = None
    queue: queue.Queue = field(default_factory=lambda: queue.Queue(QUEUE_BATCHES))
    pending: list = field(default_factory=list)
    formatters: dict = field(default_factory=dict)
    thread: threading.Thread | None = None
    section: Any = None
    error: BaseException | None = None
    finished: bool = False
    busy_since: float | None = None
    # fps sampling and wanted times, for frame requests
    next_t: float = 0.0
    targets: list[float] = field(default_factory=list)
    last_fed: float | None = None  # time of the last frame handed over

    def items(self) -> Iterator[Any]:
        while True:
            self.busy_since = None
            batch = self.queue.get()
            for item in batch:
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.busy_since = time.monotonic()
                yield item
                self.busy_since = None

    def feed(self, item: Any) -> None:
        """Hand over an item, in batches (one thread wake-up per BATCH frames, not per
        frame); never blocks on a plugin that has stopped listening."""
        self.pending.append(item)
        if len(self.pending) < BATCH and item is not _END and not isinstance(item, BaseException):
            return
        batch, self.pending = self.pending, []
        while not self.finished:
            try:
                self.queue.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue

    def body(self, info: VideoInfo) -> None:
        try:
            self.section = self.plugin.analyze(info, self.items(), self.ctx)
        except BaseException as exc:  # reported by the chain; SystemExit too
            self.error = exc
        finally:
            self.finished = True
            self.busy_since = None

    def wants_frame(self, t: float, first: float) -> bool:
        """Whether this frame (at t, the first one at `first`) goes to this plugin."""
        request = self.request
        if not isinstance(request, Frames):
            return False
        if request.every_frame:
            return True
        chosen = False
        if request.fps:
            if t - first + 1e-6 >= self.next_t:
                chosen = True
                interval = 1.0 / request.fps
                while self.next_t <= t - first + 1e-6:
                    self.next_t += interval
        while self.targets and t >= self.targets[0] - 1e-6:
            self.targets.pop(0)
            chosen = True
        return chosen


def video_info(path: Path) -> VideoInfo:
    container, stream = open_video(path, threaded=False)
    with container:
        cc = stream.codec_context
        fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        duration = container.duration / 1_000_000 if container.duration else None
        return VideoInfo(path=path, width=cc.width, height=cc.height, fps=fps, duration_s=duration,
                         frames=expected_frames(container, stream), has_audio=bool(container.streams.audio))


def run_pass(path: Path, consumers: list[Consumer], progress: Callable[[float], None],
             stuck: Callable[[str], None]) -> dict[str, Any]:
    """Feed every consumer; on return each has `section` or `error` set. Returns what the
    pass did: {"mode": "dense"|"sparse"|"audio", "decoded": frames, "seeks": n}."""
    stats: dict[str, Any] = {"mode": "audio", "decoded": 0, "seeks": 0}
    try:
        info = video_info(path)
    except PluginError as exc:
        for c in consumers:
            c.error, c.finished = exc, True
        return stats
    for c in consumers:
        try:
            c.request = _checked_request(c.plugin.wants(info, c.ctx))
            if isinstance(c.request, Frames) and c.request.times is not None:
                c.targets = sorted(float(t) for t in c.request.times)
        except BaseException as exc:
            c.error, c.finished = exc, True
    live = [c for c in consumers if not c.finished]
    for c in live:
        c.thread = threading.Thread(target=c.body, args=(info,), name=f"plugin-{c.name}", daemon=True)
        c.thread.start()
    listeners = [c for c in live if isinstance(c.request, Audio)]
    watchers = [c for c in live if isinstance(c.request, Frames)]
    audio = None
    if listeners:
        audio = threading.Thread(target=_audio_pass, args=(path, listeners), name="audio-pass", daemon=True)
        audio.start()
    done = threading.Event()
    monitor = threading.Thread(target=_monitor, args=(live, done, stuck), name="pass-monitor", daemon=True)
    monitor.start()
    try:
        if watchers:
            _video_pass(path, info, watchers, progress, stats)
        for c in live:
            if c not in listeners:
                c.feed(_END)
        if audio is not None:
            audio.join()
        for c in live:
            c.thread.join()
    finally:
        done.set()
        monitor.join()
    return stats


def _checked_request(request: Any) -> Frames | Audio | None:
    if request is not None and not isinstance(request, (Frames, Audio)):
        raise TypeError(f"wants() returned {type(request).__name__}, not Frames, Audio or None")
    if isinstance(request, Frames) and request.fps is not None and not request.fps > 0:
        raise ValueError(f"wants() asked for {request.fps!r} frames a second")
    if isinstance(request, Audio) and not (isinstance(request.rate, int) and request.rate > 0):
        raise ValueError(f"wants() asked for audio at {request.rate!r} Hz")
    return request


def run_alone(plugin: Any, path: Path, ctx: Context) -> Any:
    """One frame plugin in a pass of its own; raises what it raised."""
    ctx.options = {**defaults_of(plugin), **ctx.options}
    consumer = Consumer(str(getattr(plugin, "name", "plugin")), plugin, ctx)
    run_pass(path, [consumer], ctx.progress, lambda name: None)
    if consumer.error is not None:
        raise consumer.error
    return consumer.section


def _monitor(consumers: list[Consumer], done: threading.Event, stuck: Callable[[str], None]) -> None:
    """Name the plugin that holds one frame for long (a hang's timeout then blames it)."""
    named = None
    while not done.wait(0.2):
        now = time.monotonic()
        for c in consumers:
            since = c.busy_since
            if since is not None and now - since >= STUCK_AFTER and c.name != named:
                named = c.name
                stuck(c.name)
                break


def _fail_all(consumers: list[Consumer], error: BaseException) -> None:
    for c in consumers:
        c.feed(error)


def _video_pass(path: Path, info: VideoInfo, consumers: list[Consumer], progress: Callable[[float], None],
                stats: dict[str, Any]) -> None:
    try:
        container, stream = open_video(path)
    except PluginError as exc:
        _fail_all(consumers, exc)
        return
    duration = info.duration_s or 0.0
    with container:
        try:
            sparse = duration > 0 and not any(c.request.every_frame for c in consumers)
            stats["mode"] = "sparse" if sparse else "dense"
            (_sparse if sparse else _dense)(container, stream, info, consumers, progress, stats)
        except av.error.FFmpegError as exc:
            _fail_all(consumers, PluginError(f"The video stream cannot be decoded ({reason(exc)})."))


def _deliver(consumers: list[Consumer], frame, index: int, t: float, first: float) -> None:
    for c in consumers:
        if not c.finished and c.wants_frame(t, first):
            c.last_fed = t
            c.feed(Frame(frame, index, t, c.request, c.formatters))


def _dense(container, stream, info: VideoInfo, consumers: list[Consumer], progress, stats) -> None:
    first = None
    last = None
    index = -1
    for index, frame in enumerate(container.decode(stream)):
        stats["decoded"] += 1
        t = frame_time(frame, stream)
        first = t if first is None else first
        _deliver(consumers, frame, index, t, first)
        last = frame
        if index % 25 == 0:
            progress(min(0.99, index / max(1, info.frames)))
            if all(c.finished for c in consumers):
                return
    _flush_targets(consumers, last, index, stream)


def _flush_targets(consumers: list[Consumer], last, index: int, stream) -> None:
    """Wanted times past the last frame get the last frame (a duration that overstates)."""
    if last is None:
        return
    t = frame_time(last, stream)
    for c in consumers:
        if not c.finished and c.targets:
            c.targets.clear()
            if c.last_fed != t:  # not twice the same frame
                c.last_fed = t
                c.feed(Frame(last, index, t, c.request, c.formatters))


def _sparse(container, stream, info: VideoInfo, consumers: list[Consumer], progress, stats) -> None:
    """Only some frames are wanted: seek to each wanted time unless decoding on is cheaper."""
    fps = info.fps or 25.0
    duration = info.duration_s or 0.0
    wanted: set[float] = set()
    for c in consumers:
        wanted.update(c.targets)
        if c.request.fps:
            step = 1.0 / c.request.fps
            wanted.update(k * step for k in range(int(duration / step) + 1))
    order = sorted(wanted)
    position = float("-inf")   # time of the last frame decoded
    gop = 0.0                  # widest keyframe spacing seen: seeking closer than that saves nothing
    last_key = None
    first = None
    last = None
    frames = None
    landed = True
    for target in order:
        if all(c.finished for c in consumers):
            return
        if target <= position + 1e-6:
            continue
        if frames is None or target - position > max(gop, 1.0 / fps):
            offset = int(target / stream.time_base) + (stream.start_time or 0)
            container.seek(offset, stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
            stats["seeks"] += 1
            last_key = None
            landed = False
        for frame in frames:
            stats["decoded"] += 1
            t = frame_time(frame, stream)
            if not landed:  # where the seek landed: behind us means keyframes are far apart
                landed = True
                if t <= position + 1e-6:
                    gop = max(gop, target - t)
            if frame.key_frame:
                if last_key is not None:
                    gop = max(gop, t - last_key)
                last_key = t
            first = t if first is None else first
            position = t
            last = frame
            if t >= target - 1e-6:
                _deliver(consumers, frame, int(round((t - first) * fps)), t, 0.0)
                break
        else:
            break  # the end of the stream
        progress(min(0.99, target / duration))
    _flush_targets(consumers, last, int(round((position - (first or 0)) * fps)), stream)


def _audio_pass(path: Path, consumers: list[Consumer]) -> None:
    """Decode the audio track once, resample it for each distinct request."""
    try:
        try:
            container = av.open(str(path))
        except av.error.FFmpegError as exc:
            raise PluginError(f"The file cannot be opened ({reason(exc)}).") from None
        with container:
            if not container.streams.audio:
                return
            stream = container.streams.audio[0]
            resamplers = {}
            for c in consumers:
                key = (c.request.rate, c.request.layout)
                if key not in resamplers:
                    resamplers[key] = av.AudioResampler(format="fltp", layout=c.request.layout, rate=c.request.rate)
            counts = {key: 0 for key in resamplers}
            try:
                for frame in container.decode(stream):
                    _audio_out(frame, resamplers, counts, consumers)
                _audio_out(None, resamplers, counts, consumers)
            except av.error.FFmpegError as exc:
                raise PluginError(f"The audio stream cannot be decoded ({reason(exc)}).") from None
    except BaseException as exc:
        for c in consumers:
            c.feed(exc if isinstance(exc, PluginError) else PluginError(f"Reading the audio failed: {exc}."))
    finally:
        for c in consumers:
            c.feed(_END)


def _audio_out(frame, resamplers: dict, counts: dict, consumers: list[Consumer]) -> None:
    for key, resampler in resamplers.items():
        for out in resampler.resample(frame):
            samples = out.to_ndarray()
            chunk = AudioChunk(time_s=counts[key] / key[0], rate=key[0], samples=samples)
            counts[key] += samples.shape[-1]
            for c in consumers:
                if not c.finished and (c.request.rate, c.request.layout) == key:
                    c.feed(chunk)
