"""`faces`: frontal faces on sampled frames, with the Haar cascade that ships
inside opencv-python-headless (no model is downloaded, ever)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2

from forgesyte.plugins.base import Context, Plugin, PluginError
from forgesyte.plugins.builtin._video import decode, expected_frames, frame_time, open_video

CASCADE = "haarcascade_frontalface_default.xml"


class FacesPlugin(Plugin):
    name = "faces"
    version = "1.0"
    description = "Frontal faces (counts and boxes) on frames sampled every interval_s (OpenCV Haar cascade)."
    defaults = {"interval_s": 1.0, "min_size": 24, "scale_factor": 1.1, "min_neighbors": 5, "max_width": 640}

    def run(self, video: Path, ctx: Context) -> dict[str, Any]:
        detector = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if detector.empty():
            raise PluginError(f"OpenCV's bundled {CASCADE} could not be loaded.")
        interval = max(0.01, float(ctx.options.get("interval_s", 1.0)))
        min_size = int(ctx.options.get("min_size", 24))
        scale_factor = float(ctx.options.get("scale_factor", 1.1))
        neighbors = int(ctx.options.get("min_neighbors", 5))
        max_width = int(ctx.options.get("max_width", 640))
        container, stream = open_video(video)
        samples: list[dict[str, Any]] = []
        next_t = 0.0
        first = None
        with container:
            total = expected_frames(container, stream)
            width, height = stream.codec_context.width, stream.codec_context.height
            scale = min(1.0, max_width / max(1, width))
            for index, frame in enumerate(decode(container, stream)):
                t = frame_time(frame, stream)
                first = t if first is None else first
                if t - first + 1e-6 < next_t:
                    continue
                next_t += interval
                w, h = max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
                grey = frame.reformat(width=w, height=h, format="gray").to_ndarray()
                found = detector.detectMultiScale(grey, scaleFactor=scale_factor, minNeighbors=neighbors,
                                                  minSize=(min_size, min_size))
                boxes = [[round(int(v) / scale) for v in box] for box in (found if len(found) else [])]
                samples.append({"time_s": round(t - first, 3), "count": len(boxes), "boxes": boxes})
                ctx.progress(min(0.99, index / total))
        ctx.progress(1.0)
        return {
            "samples": samples,
            "max_count": max((s["count"] for s in samples), default=0),
            "frames_with_faces": sum(1 for s in samples if s["count"]),
            "interval_s": interval,
        }
