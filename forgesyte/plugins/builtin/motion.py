"""`motion`: intervals with motion, from frame differencing on small grey frames.

Each frame is scaled down (FFmpeg's swscale, in the shared pass) to a small
grey image, which also averages away sensor noise; the score is the
percentage of pixels that changed by more than `pixel_delta` grey levels
since the previous frame. A whole-frame mean would drown a small moving
object in a still scene; a changed-pixel share does not. Frames scoring
above `threshold` percent are motion; runs closer than `gap_s` are merged and
runs shorter than `min_s` dropped.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from forgesyte.plugins.base import Context, FramePlugin, Frames, Option, VideoInfo


class MotionPlugin(FramePlugin):
    name = "motion"
    version = "1.1"
    description = "Intervals with motion (start, end, peak score) from downscaled frame differencing."
    options = {
        "threshold": Option(float, 0.25, "percent of changed pixels that counts as motion", min=0, max=100),
        "pixel_delta": Option(int, 12, "grey levels a pixel must change by", min=1, max=255),
        "width": Option(int, 64, "width of the grey frames compared", min=8, max=1920),
        "gap_s": Option(float, 0.5, "merge motion runs closer than this", min=0),
        "min_s": Option(float, 0.2, "drop motion runs shorter than this", min=0),
    }
    cost = 0.1

    def wants(self, video: VideoInfo, ctx: Context) -> Frames:
        return Frames(width=int(ctx.options["width"]), format="gray")

    def analyze(self, video: VideoInfo, frames: Iterator, ctx: Context) -> dict[str, Any]:
        threshold = float(ctx.options["threshold"])
        delta = int(ctx.options["pixel_delta"])
        gap = float(ctx.options["gap_s"])
        min_len = float(ctx.options["min_s"])
        moving: list[tuple[float, float]] = []  # (time, score) of frames above threshold
        previous = None
        first = None
        for frame in frames:
            t = frame.time_s
            first = t if first is None else first
            small = frame.array.astype(np.int16)
            if previous is not None:
                score = float((np.abs(small - previous) > delta).mean() * 100)
                if score > threshold:
                    moving.append((t - first, score))
            previous = small
        frame_step = 1 / (video.fps or 25)
        intervals: list[dict[str, Any]] = []
        for t, score in moving:
            start = t - frame_step  # motion happened between the previous frame and this one
            if intervals and start - intervals[-1]["end_s"] <= gap:
                intervals[-1]["end_s"] = round(t, 6)
                intervals[-1]["peak"] = max(intervals[-1]["peak"], round(score, 3))
            else:
                intervals.append({"start_s": round(max(0.0, start), 6), "end_s": round(t, 6),
                                  "peak": round(score, 3)})
        intervals = [i for i in intervals if i["end_s"] - i["start_s"] >= min_len]
        return {"intervals": intervals, "threshold": threshold,
                "motion_s": round(sum(i["end_s"] - i["start_s"] for i in intervals), 6)}
