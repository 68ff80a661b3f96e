"""`ocr`: the distinct lines of text seen in the video, with when they were on screen.

Reading a frame costs about a second, so the plugin reads few: it looks at
up to `max_per_s` frames a second (from the shared pass) and reads one only
when its picture changed since the last frame it read (a shot change, or a
caption that came or went: a small grey copy differs by more than
`change` percent of its pixels). Lines read with a score below `min_score`
are dropped; a line read again in the next frame read (the same text, or
nearly: OCR noise) extends its entry instead of making another, so each
entry is one line with its first and last time on screen (and, for a line
that came back later, each time it was: `seen`).

The models are RapidOCR's bundled PP-OCR ONNX files (Apache-2.0, inside the
`rapidocr` wheel), passed by path so RapidOCR never tries to download one;
onnxruntime runs them. Needs the `ocr` extra: pip install 'forgesyte[ocr]'.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import rapidocr

from forgesyte.plugins.base import Context, FramePlugin, Frames, Option, PluginError, VideoInfo

MODELS = Path(rapidocr.__file__).resolve().parent / "models"
DET = "PP-OCRv6_det_small.onnx"
REC = "PP-OCRv6_rec_small.onnx"
CLS = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"


def engine(threads: int):
    """A RapidOCR engine on the bundled models (never a download)."""
    for name in (DET, REC, CLS):
        if not (MODELS / name).is_file():
            raise PluginError(f"RapidOCR's bundled model {name} is missing; reinstall the 'ocr' extra.")
    return rapidocr.RapidOCR(params={
        "Global.log_level": "error",
        "Global.use_cls": False,
        "Det.model_path": str(MODELS / DET),
        "Rec.model_path": str(MODELS / REC),
        "Cls.model_path": str(MODELS / CLS),
        "Det.limit_type": "max",       # shrink big frames, never enlarge small ones
        "Det.limit_side_len": 736,
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    })


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def distinct(appearances: list[dict[str, Any]], alike: float, step: float, end: float) -> list[dict[str, Any]]:
    """One entry per distinct line: its first start, its last end, its best reading; a line
    that was on screen more than once also lists each time as `seen` [[start, end], ...]."""
    lines: list[dict[str, Any]] = []
    for a in appearances:
        span = [round(a["start_s"], 3), round(min(end, a["end_s"] + step), 3)]
        line = next((x for x in lines if difflib.SequenceMatcher(None, x["_key"], a["_key"]).ratio() >= alike), None)
        if line is None:
            lines.append({"text": a["text"], "start_s": span[0], "end_s": span[1], "score": round(a["score"], 3),
                          "seen": [span], "_key": a["_key"]})
            continue
        line["seen"].append(span)
        line["end_s"] = max(line["end_s"], span[1])
        if a["score"] > line["score"]:
            line.update(text=a["text"], score=round(a["score"], 3), _key=a["_key"])
    for line in lines:
        del line["_key"]
        if len(line["seen"]) == 1:
            del line["seen"]
    return lines


class OcrPlugin(FramePlugin):
    name = "ocr"
    version = "1.0"
    description = "Distinct lines of on-screen text with when they were visible (RapidOCR, PP-OCR ONNX models)."
    options = {
        "max_per_s": Option(float, 1.0, "frames looked at per second, at most", min=0.01, max=60),
        "min_score": Option(float, 0.8, "recognition confidence a line needs", min=0, max=1),
        "change": Option(float, 0.5, "percent of pixels that must change before a frame is read again",
                         min=0, max=100),
        "max_width": Option(int, 1280, "frames wider than this are scaled down first", min=160, max=7680),
        "similar": Option(float, 0.85, "lines at least this similar (0-1) are one line", min=0.5, max=1),
        "threads": Option(int, 1, "onnxruntime threads", min=1, max=64),
    }
    cost = 1.0

    def __init__(self) -> None:
        self._engines: dict[int, Any] = {}

    def wants(self, video: VideoInfo, ctx: Context) -> Frames:
        width = min(video.width, int(ctx.options["max_width"]))
        return Frames(fps=float(ctx.options["max_per_s"]), width=width, format="bgr24")

    def analyze(self, video: VideoInfo, frames: Iterator, ctx: Context) -> dict[str, Any]:
        threads = int(ctx.options["threads"])
        if threads not in self._engines:
            self._engines[threads] = engine(threads)
        read = self._engines[threads]
        min_score = float(ctx.options["min_score"])
        change = float(ctx.options["change"]) / 100
        alike = float(ctx.options["similar"])
        step = 1.0 / float(ctx.options["max_per_s"])
        texts: list[dict[str, Any]] = []
        open_: list[dict[str, Any]] = []   # entries on screen in the last frame read
        last_small = None
        frames_read = sampled = 0
        first = None
        t = 0.0
        for frame in frames:
            sampled += 1
            first = frame.time_s if first is None else first
            t = frame.time_s - first
            small = frame.image(width=96, format="gray").astype(np.int16)
            if last_small is not None and (np.abs(small - last_small) > 12).mean() <= change:
                for entry in open_:  # same picture: what was on screen still is
                    entry["end_s"] = t
                continue
            last_small = small
            frames_read += 1
            result = read(frame.array)
            lines = [(str(text), float(score)) for text, score in zip(result.txts or (), result.scores or ())
                     if float(score) >= min_score and str(text).strip()]
            still: list[dict[str, Any]] = []
            for text, score in lines:
                key = normalise(text)
                match = next((e for e in open_ if e not in still and
                              difflib.SequenceMatcher(None, e["_key"], key).ratio() >= alike), None)
                if match is None:
                    match = {"text": text, "start_s": t, "end_s": t, "score": score, "_key": key}
                    texts.append(match)
                else:
                    match["end_s"] = t
                    if score > match["score"]:
                        match.update(text=text, score=score, _key=key)
                still.append(match)
            open_ = still
        end = video.duration_s if video.duration_s else t + step
        return {"texts": distinct(texts, alike, step, end), "frames_read": frames_read,
                "frames_sampled": sampled, "max_per_s": 1 / step}
