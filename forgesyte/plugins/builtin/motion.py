"""`motion`: intervals with motion, from frame differencing on small grey frames.

Each frame is scaled down (FFmpeg's swscale, through PyAV) to a small grey
image, which also averages away sensor noise; the score is the percentage of
pixels that changed by more than `pixel_delta` grey levels since the previous
frame. A whole-frame mean would drown a small moving object in a still scene;
a changed-pixel share does not. Frames scoring above `threshold` percent are
motion; runs closer than `gap_s` are merged and runs shorter than `min_s`
dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from forgesyte.plugins.base import Context, Plugin
from forgesyte.plugins.builtin._video import decode, expected_frames, frame_time, open_video


class MotionPlugin(Plugin):
    name = "motion"
    version = "1.0"
    description = "Intervals with motion (start, end, peak score) from downscaled frame differencing."
    defaults = {"threshold": 0.25, "pixel_delta": 12, "width": 64, "gap_s": 0.5, "min_s": 0.2}

    def run(self, video: Path, ctx: Context) -> dict[str, Any]:
        threshold = float(ctx.options.get("threshold", 0.25))
        delta = int(ctx.options.get("pixel_delta", 12))
        width = int(ctx.options.get("width", 64))
        gap = float(ctx.options.get("gap_s", 0.5))
        min_len = float(ctx.options.get("min_s", 0.2))
        container, stream = open_video(video)
        moving: list[tuple[float, float]] = []  # (time, score) of frames above threshold
        previous = None
        first = None
        frame_step = 0.0
        with container:
            total = expected_frames(container, stream)
            height = max(2, round(width * stream.codec_context.height / max(1, stream.codec_context.width)) // 2 * 2)
            for index, frame in enumerate(decode(container, stream)):
                t = frame_time(frame, stream)
                first = t if first is None else first
                small = frame.reformat(width=width, height=height, format="gray").to_ndarray()
                small = small.astype(np.int16)
                if previous is not None:
                    score = float((np.abs(small - previous) > delta).mean() * 100)
                    if score > threshold:
                        moving.append((t - first, score))
                previous = small
                if index % 50 == 0:
                    ctx.progress(min(0.99, index / total))
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            frame_step = 1 / fps
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
        ctx.progress(1.0)
        return {"intervals": intervals, "threshold": threshold,
                "motion_s": round(sum(i["end_s"] - i["start_s"] for i in intervals), 6)}
