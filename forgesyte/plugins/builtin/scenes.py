"""`scenes`: hard cuts, found by FFmpeg's `scdet` filter through a PyAV filter graph.

scdet scores each frame by how much its mean absolute frame difference jumps
relative to the previous one, so steady motion (a pan), noise and gradual
fades and dissolves score low and only abrupt changes count. The frame index
reported is the 0-based position, in decode order, of the first frame of the
new shot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av

from forgesyte.plugins.base import Context, Plugin
from forgesyte.plugins.builtin._video import decode, expected_frames, frame_time, open_video


class ScenesPlugin(Plugin):
    name = "scenes"
    version = "1.0"
    description = "Hard cuts and the scenes between them (FFmpeg scdet)."
    defaults = {"threshold": 10.0, "min_scene_s": 0.0}

    def run(self, video: Path, ctx: Context) -> dict[str, Any]:
        threshold = float(ctx.options.get("threshold", 10.0))
        min_scene = float(ctx.options.get("min_scene_s", 0.0))
        container, stream = open_video(video)
        cuts: list[dict[str, Any]] = []
        with container:
            total = expected_frames(container, stream)
            graph = av.filter.Graph()
            source = graph.add_buffer(template=stream)
            detector = graph.add("scdet", f"threshold={threshold}")
            sink = graph.add("buffersink")
            source.link_to(detector)
            detector.link_to(sink)
            graph.configure()
            index = 0
            first_time = None
            last_time = 0.0
            for frame in decode(container, stream):
                graph.push(frame)
                while True:
                    try:
                        out = graph.pull()
                    except (av.BlockingIOError, av.EOFError):
                        break
                    t = frame_time(out, stream)
                    first_time = t if first_time is None else first_time
                    last_time = t
                    score = out.metadata.get("lavfi.scd.score") if out.metadata else None
                    if score is not None and "lavfi.scd.time" in out.metadata and index > 0:
                        if not cuts or t - cuts[-1]["time_s"] >= min_scene:
                            cuts.append({"frame": index, "time_s": round(t - (first_time or 0), 6),
                                         "score": float(score)})
                    index += 1
                if index % 50 == 0:
                    ctx.progress(min(0.99, index / total))
            fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        end = (last_time - (first_time or 0)) + (1 / fps if fps else 0)
        bounds = [0.0] + [c["time_s"] for c in cuts] + [round(end, 6)]
        scenes = [{"start_s": bounds[i], "end_s": bounds[i + 1]} for i in range(len(bounds) - 1)]
        ctx.progress(1.0)
        return {"cuts": cuts, "scenes": scenes, "frames": index, "threshold": threshold}
