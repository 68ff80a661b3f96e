"""Each built-in plugin's throughput on one real-size clip, against raw decode of that clip.

    .venv/bin/python bench/plugins.py [--runs 3] [--seconds 10]

The clip: 1280x720, 25 fps, H.264, made with PyAV: four shots with hard cuts,
a moving block, texture throughout. Raw decode = PyAV decoding every frame
with the same threading the plugins use. Ratio = plugin fps / decode fps
(1.0x means the plugin costs nothing beyond decoding).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from _common import median

from forgesyte.plugins.base import Context
from forgesyte.plugins.registry import discover
from tests.videogen import VideoSpec, make_video


def frame_fn(i: int, spec: VideoSpec) -> np.ndarray:
    shot = min(3, i * 4 // spec.frames)
    rng = np.random.default_rng(shot)
    tile = rng.integers(0, 255, (spec.height // 16, spec.width // 16, 3), dtype=np.uint8)
    frame = tile.repeat(16, 0).repeat(16, 1)
    x = (i * 8) % (spec.width - 120)
    frame[300:420, x:x + 120] = 255
    return frame


def raw_decode(path: Path) -> float:
    start = time.perf_counter()
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in c.decode(stream):
            pass
    return time.perf_counter() - start


def run_plugin(plugin, path: Path, out: Path) -> float:
    def artifact(name):
        p = out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p, name
    ctx = Context(job_id="bench", input_key="clip.mp4", options=dict(getattr(plugin, "defaults", {})),
                  progress=lambda f: None, artifact=artifact, logger=logging.getLogger("bench"))
    start = time.perf_counter()
    plugin.run(path, ctx)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = VideoSpec(width=1280, height=720, fps=25, seconds=args.seconds, audio="aac")
        clip = make_video(Path(tmp) / "clip.mp4", spec, frame_fn)
        frames = spec.frames
        decode = median([raw_decode(clip) for _ in range(args.runs)])
        print(f"clip: {spec.width}x{spec.height}, {spec.fps} fps, {args.seconds:g} s, H.264, "
              f"{clip.stat().st_size / 1e6:.1f} MB; median of {args.runs} runs")
        print("| plugin | seconds | frames/s | vs raw decode |")
        print("|---|---:|---:|---:|")
        print(f"| raw decode (baseline) | {decode:.3f} | {frames / decode:.0f} | 1.00x |")
        for name, info in discover().items():
            if info.error:
                continue
            t = median([run_plugin(info.plugin, clip, Path(tmp) / name) for _ in range(args.runs)])
            print(f"| {name} | {t:.3f} | {frames / t:.0f} | {decode / t:.2f}x |")


if __name__ == "__main__":
    main()
