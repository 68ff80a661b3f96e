"""Encode test videos with PyAV, with known ground truth.

Frames are synthetic so tests know exactly what is in them; later plugins
(scenes, motion) build on the `frame_fn` hook to place cuts and motion at
known frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av
import numpy as np


@dataclass(frozen=True)
class VideoSpec:
    codec: str = "libx264"
    width: int = 320
    height: int = 240
    fps: int = 25
    seconds: float = 2.0
    audio: str | None = "aac"
    sample_rate: int = 48000

    @property
    def frames(self) -> int:
        return int(round(self.fps * self.seconds))


def gradient_frame(index: int, spec: VideoSpec) -> np.ndarray:
    """A moving gradient: cheap, deterministic, not trivially compressible."""
    x = np.arange(spec.width, dtype=np.uint16)[None, :]
    y = np.arange(spec.height, dtype=np.uint16)[:, None]
    base = ((x + y + index * 3) % 256).astype(np.uint8)
    return np.stack([base, np.roll(base, index, axis=1), 255 - base], axis=-1)


def make_video(path: Path, spec: VideoSpec,
               frame_fn: Callable[[int, VideoSpec], np.ndarray] = gradient_frame) -> Path:
    path = Path(path)
    with av.open(str(path), "w") as container:
        vstream = container.add_stream(spec.codec, rate=spec.fps)
        vstream.width, vstream.height = spec.width, spec.height
        vstream.pix_fmt = "yuv420p"
        astream = None
        if spec.audio:
            astream = container.add_stream(spec.audio, rate=spec.sample_rate)
            astream.layout = "stereo"
        for index in range(spec.frames):
            frame = av.VideoFrame.from_ndarray(frame_fn(index, spec), format="rgb24")
            for packet in vstream.encode(frame):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            chunk = 960 if spec.audio == "libopus" else 1024
            total = int(spec.sample_rate * spec.seconds)
            t = np.arange(total, dtype=np.float32) / spec.sample_rate
            tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, total, chunk):
                part = tone[start:start + chunk]
                if len(part) < chunk:
                    part = np.pad(part, (0, chunk - len(part)))
                frame = av.AudioFrame.from_ndarray(np.stack([part, part]), format="fltp", layout="stereo")
                frame.sample_rate = spec.sample_rate
                frame.pts = start
                for packet in astream.encode(frame):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path
