"""`thumbnails`: evenly spaced thumbnails and a contact sheet, as artifacts.

Seeks to each target time (nearest keyframe before it, then decodes forward
to the frame), scales with FFmpeg, and encodes JPEG or WebP with OpenCV.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from forgesyte.plugins.base import Context, Plugin, PluginError
from forgesyte.plugins.builtin._video import decode, frame_time, open_video

FORMATS = {"jpg": (".jpg", cv2.IMWRITE_JPEG_QUALITY), "webp": (".webp", cv2.IMWRITE_WEBP_QUALITY)}


class ThumbnailsPlugin(Plugin):
    name = "thumbnails"
    version = "1.0"
    description = "Evenly spaced thumbnails (JPEG or WebP) and a contact sheet."
    defaults = {"count": 6, "width": 320, "format": "jpg", "quality": 85, "columns": 3}

    def run(self, video: Path, ctx: Context) -> dict[str, Any]:
        count = max(1, int(ctx.options.get("count", 6)))
        width = max(16, int(ctx.options.get("width", 320)))
        fmt = str(ctx.options.get("format", "jpg")).lower()
        if fmt not in FORMATS:
            raise PluginError(f"Thumbnail format {fmt!r} is not one of {', '.join(FORMATS)}.")
        ext, quality_flag = FORMATS[fmt]
        quality = int(ctx.options.get("quality", 85))
        columns = max(1, int(ctx.options.get("columns", 3)))
        container, stream = open_video(video)
        images: list[np.ndarray] = []
        thumbs: list[dict[str, Any]] = []
        with container:
            duration = (container.duration or 0) / 1_000_000
            height = max(2, round(width * stream.codec_context.height / max(1, stream.codec_context.width)) // 2 * 2)
            targets = [duration * (i + 0.5) / count for i in range(count)]
            for i, target in enumerate(targets):
                frame = self._frame_at(container, stream, target)
                if frame is None:
                    break
                image = frame.reformat(width=width, height=height, format="bgr24").to_ndarray()
                path, key = ctx.artifact(f"thumb-{i + 1:02d}{ext}")
                self._write(path, image, quality_flag, quality)
                images.append(image)
                thumbs.append({"time_s": round(frame_time(frame, stream), 3), "key": key})
                ctx.progress((i + 1) / (count + 1))
        if not images:
            raise PluginError("No frame could be decoded for a thumbnail.")
        rows = math.ceil(len(images) / columns)
        sheet = np.zeros((rows * images[0].shape[0], columns * width, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            r, c = divmod(i, columns)
            sheet[r * image.shape[0]:(r + 1) * image.shape[0], c * width:(c + 1) * width] = image
        path, sheet_key = ctx.artifact(f"contact-sheet{ext}")
        self._write(path, sheet, quality_flag, quality)
        ctx.progress(1.0)
        return {"thumbnails": thumbs, "contact_sheet": sheet_key, "width": width, "height": images[0].shape[0]}

    @staticmethod
    def _frame_at(container, stream, target_s: float):
        offset = int(target_s / stream.time_base) + (stream.start_time or 0)
        container.seek(offset, stream=stream, backward=True, any_frame=False)
        chosen = None
        for frame in decode(container, stream):
            chosen = frame
            if frame_time(frame, stream) >= target_s - 1e-6:
                break
        return chosen

    @staticmethod
    def _write(path: Path, image: np.ndarray, flag: int, quality: int) -> None:
        ok, buffer = cv2.imencode(path.suffix, image, [flag, quality])
        if not ok:
            raise PluginError(f"OpenCV could not encode {path.name}.")
        path.write_bytes(buffer.tobytes())
