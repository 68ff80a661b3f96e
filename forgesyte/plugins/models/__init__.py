"""Model files shipped inside ForgeSyte, each checked against its sha256 before use.

    face_detection_short_range.tflite  MediaPipe BlazeFace (short range), from the
                                       mediapipe 0.10.21 wheel; Apache-2.0, see
                                       LICENSE-mediapipe.txt
    silero_vad.onnx                    Silero VAD v6 (silero-vad 6.2.3 wheel);
                                       MIT, see LICENSE-silero-vad.txt

Nothing here is ever downloaded: a plugin loads these by path, so it works
with no network at all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from forgesyte.plugins.base import PluginError

HERE = Path(__file__).resolve().parent

SHA256 = {
    "face_detection_short_range.tflite": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "silero_vad.onnx": "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
}

_verified: set[str] = set()


def model_path(name: str) -> Path:
    """The path of a bundled model whose bytes match its recorded sha256."""
    path = HERE / name
    if name not in _verified:
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise PluginError(f"The bundled model {name} cannot be read ({exc.strerror}); "
                              "reinstall forgesyte.") from None
        if digest != SHA256[name]:
            raise PluginError(f"The bundled model {name} is damaged (its sha256 does not match); "
                              "reinstall forgesyte.")
        _verified.add(name)
    return path
