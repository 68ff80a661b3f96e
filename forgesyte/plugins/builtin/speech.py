"""`speech`: when someone speaks, from the audio track, with Silero VAD.

Silero VAD v6 (an ONNX model shipped in forgesyte/plugins/models, MIT,
sha256-checked) runs with onnxruntime on 32 ms windows of 16 kHz mono audio
that FFmpeg resampled in the shared pass; no torch, no download. Window
probabilities become segments the way Silero's own `get_speech_timestamps`
does: speech starts above `threshold`, ends after `min_silence_s` below
`threshold - 0.15`, segments shorter than `min_speech_s` are dropped and the
rest padded by `pad_s`. A video without an audio track completes with
`"audio": false`.

Needs the `speech` extra (onnxruntime): pip install 'forgesyte[speech]'.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import onnxruntime

from forgesyte.plugins.base import Audio, Context, FramePlugin, Option, VideoInfo
from forgesyte.plugins.models import model_path

RATE = 16000
WINDOW = 512   # samples the model takes at 16 kHz
CONTEXT = 64   # samples of the previous window it sees again


class SileroVad:
    """The ONNX model with its recurrent state; `probabilities` over a whole signal."""

    def __init__(self) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(model_path("silero_vad.onnx")), sess_options=options,
                                                    providers=["CPUExecutionProvider"])

    def probabilities(self, windows: Iterator[np.ndarray]) -> Iterator[float]:
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros((1, CONTEXT), dtype=np.float32)
        rate = np.array(RATE, dtype=np.int64)
        for window in windows:
            x = np.concatenate([context, window[None, :]], axis=1)
            out, state = self.session.run(None, {"input": x, "state": state, "sr": rate})
            context = x[:, -CONTEXT:]
            yield float(out.reshape(-1)[0])


def windows_of(chunks: Iterator[Any]) -> Iterator[np.ndarray]:
    """Fixed WINDOW-sample windows from the pass's audio chunks (the last one zero-padded)."""
    pending = np.zeros(0, dtype=np.float32)
    for chunk in chunks:
        pending = np.concatenate([pending, chunk.samples[0].astype(np.float32)])
        usable = len(pending) // WINDOW * WINDOW
        for start in range(0, usable, WINDOW):
            yield pending[start:start + WINDOW]
        pending = pending[usable:]
    if len(pending):
        yield np.pad(pending, (0, WINDOW - len(pending)))


def segments(probs: list[float], threshold: float, min_speech_s: float, min_silence_s: float,
             pad_s: float, total_s: float) -> list[dict[str, float]]:
    step = WINDOW / RATE
    low = max(0.01, threshold - 0.15)
    found: list[list[float]] = []
    start = None
    silence_from = None
    for i, p in enumerate(probs):
        t = i * step
        if p >= threshold:
            silence_from = None
            if start is None:
                start = t
        elif start is not None and p < low:
            silence_from = t if silence_from is None else silence_from
            if t + step - silence_from >= min_silence_s:
                found.append([start, silence_from])
                start, silence_from = None, None
    if start is not None:
        found.append([start, silence_from if silence_from is not None else len(probs) * step])
    found = [s for s in found if s[1] - s[0] >= min_speech_s]
    merged: list[list[float]] = []
    for a, b in found:
        a, b = max(0.0, a - pad_s), min(total_s, b + pad_s)
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [{"start_s": round(a, 3), "end_s": round(b, 3)} for a, b in merged]


class SpeechPlugin(FramePlugin):
    name = "speech"
    version = "1.0"
    description = "Voice activity in the audio track: speech segments and share (Silero VAD, ONNX)."
    options = {
        "threshold": Option(float, 0.5, "speech probability that starts speech", min=0.05, max=0.99),
        "min_speech_s": Option(float, 0.25, "drop speech shorter than this", min=0),
        "min_silence_s": Option(float, 0.1, "silence that ends a segment", min=0),
        "pad_s": Option(float, 0.03, "padding added to each side of a segment", min=0),
    }
    cost = 0.05

    def __init__(self) -> None:
        self._vad: SileroVad | None = None

    def wants(self, video: VideoInfo, ctx: Context) -> Audio | None:
        return Audio(rate=RATE, layout="mono") if video.has_audio else None

    def analyze(self, video: VideoInfo, chunks: Iterator, ctx: Context) -> dict[str, Any]:
        if not video.has_audio:
            for _ in chunks:
                pass
            return {"audio": False, "speech_s": 0.0, "speech_ratio": 0.0, "segments": []}
        if self._vad is None:
            self._vad = SileroVad()
        probs = list(self._vad.probabilities(windows_of(chunks)))
        total = len(probs) * WINDOW / RATE
        found = segments(probs, float(ctx.options["threshold"]), float(ctx.options["min_speech_s"]),
                         float(ctx.options["min_silence_s"]), float(ctx.options["pad_s"]), total)
        speech = sum(s["end_s"] - s["start_s"] for s in found)
        return {"audio": True, "speech_s": round(speech, 3), "speech_ratio": round(speech / total, 4) if total else 0.0,
                "segments": found, "audio_s": round(total, 3)}
