"""`fingerprint`: a perceptual hash of the picture every `interval_s`, for `forgesyte similar`.

Each sampled frame is scaled by FFmpeg to 32x32 grey; the 8x8 lowest
frequencies of its DCT (cv2.dct) are compared with their median to give 64
bits. Re-encoding, resizing, mild colour changes and compression artefacts
move a hash by a few bits; a different picture moves it by about half of
them. Flat frames (black, a fade, a plain title background) are skipped:
they would match every other flat frame of every other video.
"""

from __future__ import annotations

from typing import Any, Iterator

import cv2
import numpy as np

from forgesyte.plugins.base import Context, FramePlugin, Frames, Option, VideoInfo

BITS = 64


def phash(grey32: np.ndarray) -> int:
    """64-bit DCT hash of a 32x32 grey image."""
    coefficients = cv2.dct(np.float32(grey32))[:8, :8].ravel()
    median = np.median(coefficients[1:])  # the DC term is brightness, not structure
    bits = coefficients > median
    return int(np.packbits(bits).view(">u8")[0])


class FingerprintPlugin(FramePlugin):
    name = "fingerprint"
    version = "1.0"
    description = "Perceptual hashes (64-bit DCT) of frames sampled over time, for `forgesyte similar`."
    options = {
        "interval_s": Option(float, 0.5, "seconds between hashed frames", min=0.05, max=60),
        "flat_below": Option(float, 6.0, "skip frames whose grey levels vary less than this (std)",
                             min=0, max=128),
    }
    cost = 0.02

    def wants(self, video: VideoInfo, ctx: Context) -> Frames:
        return Frames(fps=1.0 / float(ctx.options["interval_s"]), width=32, height=32, format="gray")

    def analyze(self, video: VideoInfo, frames: Iterator, ctx: Context) -> dict[str, Any]:
        flat = float(ctx.options["flat_below"])
        hashes: list[str] = []
        times: list[float] = []
        skipped = 0
        first = None
        for frame in frames:
            first = frame.time_s if first is None else first
            grey = frame.array
            if float(grey.std()) < flat:
                skipped += 1
                continue
            hashes.append(f"{phash(grey):016x}")
            times.append(round(frame.time_s - first, 3))
        return {"interval_s": float(ctx.options["interval_s"]), "bits": BITS, "hashes": hashes,
                "times_s": times, "skipped_flat": skipped}
