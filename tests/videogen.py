"""Encode test videos with PyAV, with known ground truth.

Frames are synthetic so tests know exactly what is in them; later plugins
(scenes, motion) build on the `frame_fn` hook to place cuts and motion at
known frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
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
    gop: int | None = None  # keyframe interval in frames (None: the encoder's default)

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
        if spec.gop:
            vstream.codec_context.gop_size = spec.gop
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


def transcode(source: Path, dest: Path, *, width: int | None = None, height: int | None = None,
              codec: str = "libx264", start_s: float = 0.0, bit_rate: int | None = None) -> Path:
    """Re-encode a video the way copies of it get made: another codec or bit rate, resized
    (by FFmpeg's scaler), trimmed at the start. Audio is dropped."""
    dest = Path(dest)
    with av.open(str(source)) as src, av.open(str(dest), "w") as out:
        vin = src.streams.video[0]
        rate = vin.average_rate or 25
        vout = out.add_stream(codec, rate=rate)
        vout.width = width or vin.codec_context.width
        vout.height = height or vin.codec_context.height
        vout.pix_fmt = "yuv420p"
        if bit_rate:
            vout.bit_rate = bit_rate
        written = 0
        for frame in src.decode(vin):
            if frame.time is not None and frame.time + 1e-6 < start_s:
                continue
            image = frame.reformat(width=vout.width, height=vout.height, format="yuv420p")
            image.pts, image.time_base = written, Fraction(1, 1) / rate
            written += 1
            for packet in vout.encode(image):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
    return dest


def text_frame(lines: list[str], spec: VideoSpec, background: int = 25) -> np.ndarray:
    """A plain frame with lines of large white text (for OCR), drawn by OpenCV."""
    import cv2

    image = np.full((spec.height, spec.width, 3), background, dtype=np.uint8)
    scale = spec.width / 640
    for i, line in enumerate(lines):
        y = int(spec.height * (0.35 + 0.25 * i))
        cv2.putText(image, line, (int(40 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, 1.4 * scale,
                    (255, 255, 255), max(2, int(3 * scale)), cv2.LINE_AA)
    return image


def with_audio(video: Path, audio: Path | None, dest: Path, offset_s: float = 0.0) -> Path:
    """`video`'s picture (copied, not re-encoded) with the sound of `audio` (any file FFmpeg
    reads, e.g. a WAV from espeak-ng) starting at `offset_s`, silence around it, encoded as
    AAC; None: silence all through."""
    dest = Path(dest)
    with av.open(str(video)) as vsrc, av.open(str(dest), "w") as out:
        vin = vsrc.streams.video[0]
        vout = out.add_stream_from_template(vin)
        duration = float(vsrc.duration / 1_000_000) if vsrc.duration else 0.0
        aout = out.add_stream("aac", rate=48000)
        aout.layout = "mono"
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=48000)
        samples = []
        if audio is not None:
            with av.open(str(audio)) as asrc:
                for frame in asrc.decode(asrc.streams.audio[0]):
                    samples.extend(f.to_ndarray()[0] for f in resampler.resample(frame))
                samples.extend(f.to_ndarray()[0] for f in resampler.resample(None))
        signal = np.concatenate([np.zeros(int(48000 * offset_s), np.float32), *samples])
        total = int(48000 * duration)
        signal = np.pad(signal[:total], (0, max(0, total - len(signal)))).astype(np.float32)
        for packet in vsrc.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)
        for start in range(0, total, 1024):
            part = signal[start:start + 1024]
            part = np.pad(part, (0, 1024 - len(part)))
            frame = av.AudioFrame.from_ndarray(part[None, :], format="fltp", layout="mono")
            frame.sample_rate = 48000
            frame.pts = start
            for packet in aout.encode(frame):
                out.mux(packet)
        for packet in aout.encode():
            out.mux(packet)
    return dest
