"""`scenes`: hard cuts, found by FFmpeg's `scdet` filter through a PyAV filter graph.

scdet scores each frame by how much its mean absolute frame difference jumps
relative to the previous one, so steady motion (a pan), noise and gradual
fades and dissolves score low and only abrupt changes count. The frame index
reported is the 0-based position, in decode order, of the first frame of the
new shot. A frame plugin: it reads every decoded frame of the shared pass, at
full size, as FFmpeg decoded it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterator

import av

from forgesyte.plugins.base import Context, FramePlugin, Frames, Option, VideoInfo


class ScenesPlugin(FramePlugin):
    name = "scenes"
    version = "1.1"
    description = "Hard cuts and the scenes between them (FFmpeg scdet)."
    options = {
        "threshold": Option(float, 10.0, "scdet score (0-100) above which a frame starts a new shot",
                            min=0, max=100),
        "min_scene_s": Option(float, 0.0, "drop a cut closer than this to the previous one", min=0),
    }
    cost = 0.25

    def wants(self, video: VideoInfo, ctx: Context) -> Frames:
        return Frames()  # every frame, used as decoded (frame.av)

    def analyze(self, video: VideoInfo, frames: Iterator, ctx: Context) -> dict[str, Any]:
        threshold = float(ctx.options["threshold"])
        min_scene = float(ctx.options["min_scene_s"])
        cuts: list[dict[str, Any]] = []
        graph = None
        times: deque[float] = deque()  # input times, in order: scdet passes frames through
        index = 0
        first_time = None
        last_time = 0.0

        def drain() -> None:
            nonlocal index, first_time, last_time
            while True:
                try:
                    out = graph.pull()
                except (av.BlockingIOError, av.EOFError):
                    return
                t = times.popleft()
                first_time = t if first_time is None else first_time
                last_time = t
                score = out.metadata.get("lavfi.scd.score") if out.metadata else None
                if score is not None and "lavfi.scd.time" in out.metadata and index > 0:
                    if not cuts or t - cuts[-1]["time_s"] >= min_scene:
                        cuts.append({"frame": index, "time_s": round(t - (first_time or 0), 6),
                                     "score": float(score)})
                index += 1

        for frame in frames:
            if graph is None:
                graph = av.filter.Graph()
                source = graph.add_buffer(width=frame.av.width, height=frame.av.height,
                                          format=frame.av.format.name, time_base=frame.av.time_base)
                detector = graph.add("scdet", f"threshold={threshold}")
                sink = graph.add("buffersink")
                source.link_to(detector)
                detector.link_to(sink)
                graph.configure()
            times.append(frame.time_s)
            graph.push(frame.av)
            drain()
        if graph is not None:
            graph.push(None)
            drain()
        fps = video.fps
        end = (last_time - (first_time or 0)) + (1 / fps if fps else 0)
        bounds = [0.0] + [c["time_s"] for c in cuts] + [round(end, 6)]
        scenes = [{"start_s": bounds[i], "end_s": bounds[i + 1]} for i in range(len(bounds) - 1)]
        return {"cuts": cuts, "scenes": scenes, "frames": index, "threshold": threshold}
