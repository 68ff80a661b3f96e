"""`thumbnails`: evenly spaced thumbnails and a contact sheet, as artifacts.

A frame plugin that wants only `count` frames at known times: when nothing
else in the job needs every frame, the pass seeks to them instead of decoding
the whole video. Frames come scaled by FFmpeg; OpenCV encodes JPEG or WebP.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from forgesyte.plugins.base import Context, FramePlugin, Frames, Option, PluginError, VideoInfo

FORMATS = {"jpg": (".jpg", cv2.IMWRITE_JPEG_QUALITY), "webp": (".webp", cv2.IMWRITE_WEBP_QUALITY)}


class ThumbnailsPlugin(FramePlugin):
    name = "thumbnails"
    version = "1.1"
    description = "Evenly spaced thumbnails (JPEG or WebP) and a contact sheet."
    options = {
        "count": Option(int, 6, "how many thumbnails", min=1, max=1000),
        "width": Option(int, 320, "thumbnail width in pixels", min=16, max=7680),
        "format": Option(str, "jpg", "image format", choices=tuple(FORMATS)),
        "quality": Option(int, 85, "encoder quality", min=1, max=100),
        "columns": Option(int, 3, "thumbnails per row of the contact sheet", min=1, max=100),
    }
    cost = 0.02

    def wants(self, video: VideoInfo, ctx: Context) -> Frames:
        fmt = str(ctx.options["format"]).lower()
        if fmt not in FORMATS:
            raise PluginError(f"Thumbnail format {fmt!r} is not one of {', '.join(FORMATS)}.")
        count = max(1, int(ctx.options["count"]))
        duration = video.duration_s or 0.0
        return Frames(times=[duration * (i + 0.5) / count for i in range(count)],
                      width=max(16, int(ctx.options["width"])), format="bgr24")

    def analyze(self, video: VideoInfo, frames: Iterator, ctx: Context) -> dict[str, Any]:
        ext, quality_flag = FORMATS[str(ctx.options["format"]).lower()]
        quality = int(ctx.options["quality"])
        columns = max(1, int(ctx.options["columns"]))
        images: list[np.ndarray] = []
        thumbs: list[dict[str, Any]] = []
        for i, frame in enumerate(frames):
            image = frame.array
            path, key = ctx.artifact(f"thumb-{i + 1:02d}{ext}")
            self._write(path, image, quality_flag, quality)
            images.append(image)
            thumbs.append({"time_s": round(frame.time_s, 3), "key": key})
        if not images:
            raise PluginError("No frame could be decoded for a thumbnail.")
        rows = math.ceil(len(images) / columns)
        h, w = images[0].shape[:2]
        sheet = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            r, c = divmod(i, columns)
            sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
        path, sheet_key = ctx.artifact(f"contact-sheet{ext}")
        self._write(path, sheet, quality_flag, quality)
        return {"thumbnails": thumbs, "contact_sheet": sheet_key, "width": w, "height": h}

    @staticmethod
    def _write(path: Path, image: np.ndarray, flag: int, quality: int) -> None:
        ok, buffer = cv2.imencode(path.suffix, image, [flag, quality])
        if not ok:
            raise PluginError(f"OpenCV could not encode {path.name}.")
        path.write_bytes(buffer.tobytes())
