"""Videos for the systemd test: `python tests/systemd/make_videos.py OUTDIR NAME...`.

Each NAME.mp4 is a distinct 3 s H.264 + AAC clip (320x240, 25 fps) with a
hard cut in the middle, made with the suite's own generator, so no two are
duplicates of each other and every built-in plugin has something to find.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.videogen import VideoSpec, gradient_frame, make_video


def main(outdir: Path, names: list[str]) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    spec = VideoSpec(seconds=3.0)
    for name in names:
        seed = zlib.crc32(name.encode())

        def frame(index: int, spec: VideoSpec, seed: int = seed) -> np.ndarray:
            image = gradient_frame(index + seed % 97, spec)
            if index >= spec.frames // 2:  # the hard cut
                image = 255 - image[:, ::-1]
            image[:8, :8] = seed % 256  # a corner that makes every file's content distinct
            return image

        make_video(outdir / f"{name}.mp4", spec, frame)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
