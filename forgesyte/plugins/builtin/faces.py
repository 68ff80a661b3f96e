"""`faces`: faces on frames sampled every `interval_s`, with MediaPipe's BlazeFace.

The short-range BlazeFace model (a 230 KB TFLite file shipped in
forgesyte/plugins/models, Apache-2.0, sha256-checked at load) runs through
OpenCV's own DNN module (`cv2.dnn.readNetFromTFLite`): no MediaPipe, no
download, a few milliseconds a frame. It finds faces that fill a fair part
of the picture (within about two metres of the camera), frontal or turned,
with glasses or not, and does not fire on collars or cartoons the way the
old Haar cascade did.

Frames come from the shared pass scaled by FFmpeg so the longer side is 128
pixels, then are letterboxed to the model's 128x128 square. The model's 896
anchor boxes are decoded the way MediaPipe's graph does (SSD anchors, strides
8/16/16/16) and overlapping boxes merged by non-maximum suppression.
"""

from __future__ import annotations

from typing import Any, Iterator

import cv2
import numpy as np

from forgesyte.plugins.base import Context, FramePlugin, Frames, Option, VideoInfo
from forgesyte.plugins.models import model_path

MODEL = "face_detection_short_range.tflite"
SIZE = 128


def anchors() -> np.ndarray:
    """(896, 2) anchor centres, normalised: 16x16 cells x 2, then 8x8 cells x 6."""
    rows = []
    for grid, per_cell in ((16, 2), (8, 6)):
        y, x = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        centres = np.stack([(x.ravel() + 0.5) / grid, (y.ravel() + 0.5) / grid], axis=1)
        rows.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(rows).astype(np.float32)


ANCHORS = anchors()


def letterbox(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The image centred on a SIZE x SIZE canvas; (canvas, x pad, y pad) as fractions."""
    h, w = image.shape[:2]
    canvas = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
    canvas[top:top + h, left:left + w] = image[:SIZE, :SIZE]
    return canvas, left / SIZE, top / SIZE


class FaceDetector:
    """BlazeFace on one RGB image whose longer side is SIZE; boxes in that image's pixels."""

    def __init__(self) -> None:
        self.net = cv2.dnn.readNetFromTFLite(str(model_path(MODEL)))
        self.outputs = self.net.getUnconnectedOutLayersNames()

    def detect(self, image: np.ndarray, min_score: float, overlap: float) -> list[tuple[list[float], float]]:
        canvas, pad_x, pad_y = letterbox(image)
        blob = (canvas.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
        self.net.setInput(np.ascontiguousarray(blob))
        outs = dict(zip(self.outputs, self.net.forward(self.outputs)))
        logits = np.clip(outs["classificators"].reshape(-1).astype(np.float64), -100, 100)
        scores = 1 / (1 + np.exp(-logits))
        raw = outs["regressors"].reshape(-1, 16)
        keep = np.flatnonzero(scores >= min_score)
        if keep.size == 0:
            return []
        cx = raw[keep, 0] / SIZE + ANCHORS[keep, 0]
        cy = raw[keep, 1] / SIZE + ANCHORS[keep, 1]
        w, h = raw[keep, 2] / SIZE, raw[keep, 3] / SIZE
        # normalised to the letterboxed square -> pixels of the (unpadded) image
        x0 = (cx - w / 2 - pad_x) * SIZE
        y0 = (cy - h / 2 - pad_y) * SIZE
        boxes = np.stack([x0, y0, w * SIZE, h * SIZE], axis=1)
        chosen = cv2.dnn.NMSBoxes(boxes.tolist(), scores[keep].tolist(), min_score, overlap)
        return [(boxes[i].tolist(), float(scores[keep][i])) for i in np.array(chosen).reshape(-1)]


def tiles(width: int, height: int) -> list[tuple[int, int]]:
    """Top-left corners of SIZE-pixel squares covering a width x height image, overlapping."""
    def starts(extent: int) -> list[int]:
        if extent <= SIZE:
            return [0]
        count = -(-(extent - SIZE) // (SIZE * 3 // 4)) + 1
        return [round(i * (extent - SIZE) / (count - 1)) for i in range(count)]
    return [(x, y) for y in starts(height) for x in starts(width)]


def merge(found: list[tuple[list[float], float]], min_score: float, overlap: float) -> list[tuple[list[float], float]]:
    if len(found) < 2:
        return found
    chosen = cv2.dnn.NMSBoxes([b for b, _ in found], [s for _, s in found], min_score, overlap)
    return [found[i] for i in np.array(chosen).reshape(-1)]


class FacesPlugin(FramePlugin):
    name = "faces"
    version = "2.0"
    description = "Faces (counts, boxes, scores) on frames sampled every interval_s (MediaPipe BlazeFace, via OpenCV)."
    options = {
        "interval_s": Option(float, 1.0, "seconds between sampled frames", min=0.01),
        "min_score": Option(float, 0.75, "detection confidence a face needs", min=0.0, max=1.0),
        "overlap": Option(float, 0.3, "boxes overlapping more than this (IoU) are one face", min=0.0, max=1.0),
        "grid": Option(int, 1, "also look in overlapping tiles of a frame scaled to grid x 128 pixels, "
                       "for faces smaller than about a tenth of the frame (costs about grid^2 more)",
                       min=1, max=8),
    }
    cost = 0.05

    def __init__(self) -> None:
        self._detector: FaceDetector | None = None

    def wants(self, video: VideoInfo, ctx: Context) -> Frames:
        interval = max(0.01, float(ctx.options["interval_s"]))
        landscape = video.width >= video.height
        return Frames(fps=1.0 / interval, width=SIZE if landscape else None,
                      height=None if landscape else SIZE, format="rgb24")

    def analyze(self, video: VideoInfo, frames: Iterator, ctx: Context) -> dict[str, Any]:
        if self._detector is None:
            self._detector = FaceDetector()
        interval = max(0.01, float(ctx.options["interval_s"]))
        min_score = float(ctx.options["min_score"])
        overlap = float(ctx.options["overlap"])
        grid = int(ctx.options["grid"])
        samples: list[dict[str, Any]] = []
        first = None
        for frame in frames:
            first = frame.time_s if first is None else first
            image = frame.array
            scale = video.width / image.shape[1]  # back to the coded frame size
            found = self._detector.detect(image, min_score, overlap)
            if grid > 1:
                big = frame.image(*(SIZE * grid, None) if video.width >= video.height else (None, SIZE * grid))
                ratio = image.shape[1] / big.shape[1]
                for x, y in tiles(big.shape[1], big.shape[0]):
                    for box, score in self._detector.detect(big[y:y + SIZE, x:x + SIZE], min_score, overlap):
                        found.append(([(box[0] + x) * ratio, (box[1] + y) * ratio, box[2] * ratio, box[3] * ratio],
                                      score))
                found = merge(found, min_score, overlap)
            found.sort(key=lambda f: (f[0][0], f[0][1]))
            boxes = [[round(v * scale) for v in box] for box, _ in found]
            samples.append({"time_s": round(frame.time_s - first, 3), "count": len(boxes), "boxes": boxes,
                            "scores": [round(s, 3) for _, s in found]})
        return {
            "samples": samples,
            "max_count": max((s["count"] for s in samples), default=0),
            "frames_with_faces": sum(1 for s in samples if s["count"]),
            "interval_s": interval,
        }
