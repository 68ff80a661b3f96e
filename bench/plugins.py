"""What analysis costs, in decodes: each built-in plugin and the whole chain against one
threaded decode of the same clip, measured in the same run (medians).

    .venv/bin/python bench/plugins.py [--runs 3] [--seconds 24] [--before ff7709e]

The clip: 1280x720, 30 fps, H.264 with AAC audio, made with PyAV: four shots
with hard cuts, a slow pan, a moving block, a caption in the third shot.
Baseline: PyAV decoding every frame with FFmpeg's threads (thread_type AUTO),
as the worker does. "cost" = seconds / baseline seconds: 1.00x costs exactly
one decode. Machines are shared and noisy: each measurement is paired with a
baseline decode run right before it, and the table shows the median of the
per-pair ratios (and the median seconds). "alone" runs one plugin in a pass of its own; "chain" runs the
job the worker would (run_chain: one shared pass for every frame plugin).

--before REV also times the plugins of an older commit (its forgesyte/plugins,
in a child process) on the same clip, for the before/after table in
docs/benchmarks.md; ff7709e is the last commit where each plugin decoded the
file itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from _common import median

from forgesyte.plugins.base import Context
from forgesyte.plugins.chain import run_chain
from forgesyte.plugins.registry import Loader, discover
from forgesyte.storage.paths import Root
from forgesyte.storage.results import ResultStore
from tests.videogen import VideoSpec, make_video

CHAIN = ["metadata", "scenes", "motion", "thumbnails", "faces", "fingerprint", "speech"]
OLD_CHAIN = ["metadata", "scenes", "motion", "thumbnails", "faces"]


def frame_fn(i: int, spec: VideoSpec) -> np.ndarray:
    shot = min(3, i * 4 // spec.frames)
    rng = np.random.default_rng(shot)
    wide = rng.integers(0, 255, (spec.height // 16, spec.width // 8, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
    offset = i % spec.width  # a slow pan (1 px a frame) that never wraps within 24 s
    frame = np.ascontiguousarray(wide[:, offset:offset + spec.width])
    x = (i * 8) % (spec.width - 120)
    frame[300:420, x:x + 120] = 255
    if shot == 2:
        cv2.putText(frame, "FORGESYTE BENCHMARK", (80, 620), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 5)
    # Grain, as a camera's: without it the clip compresses to a bit rate no real 720p has.
    grain = np.random.default_rng(i).integers(-8, 9, frame.shape, dtype=np.int16)
    return np.clip(frame.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def raw_decode(path: Path) -> float:
    start = time.perf_counter()
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in c.decode(stream):
            pass
    return time.perf_counter() - start


def context(out: Path, plugin) -> Context:
    def artifact(name):
        p = out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p, name
    from forgesyte.plugins.options import defaults_of

    return Context(job_id="bench", input_key="clip.mp4", options=defaults_of(plugin), progress=lambda f: None,
                   artifact=artifact, logger=logging.getLogger("bench"))


def run_alone(plugin, path: Path, out: Path) -> float:
    start = time.perf_counter()
    plugin.run(path, context(out, plugin))
    return time.perf_counter() - start


def paired(measure, clip: Path, runs: int) -> tuple[float, float]:
    """(median seconds, median of seconds / a baseline decode measured just before)."""
    seconds, ratios = [], []
    for n in range(runs):
        decode = raw_decode(clip)
        t = measure(n)
        seconds.append(t)
        ratios.append(t / decode)
    return median(seconds), median(ratios)


def run_job(names: list[str], clip: Path, tmp: Path, loader: Loader, n: int) -> tuple[float, dict]:
    inbox = Root(clip.parent)
    results = ResultStore(tmp / f"out-{n}")
    task = {"job_id": f"bench{n}", "run": 1, "input": clip.name, "folder": f"{clip.name}-bench{n}",
            "plugins": names, "options": {}}
    start = time.perf_counter()
    outcome = run_chain(task, loader, inbox, results, lambda message: None)
    elapsed = time.perf_counter() - start
    if outcome["status"] != "completed":
        raise SystemExit(f"the chain failed: {outcome['error']}")
    return elapsed, json.loads(results.root.path_for(outcome["output"]).read_text())


BEFORE = r"""
import json, logging, sys, time
from pathlib import Path
import av
from forgesyte.plugins.base import Context
from forgesyte.plugins.registry import discover
clip, out, runs, names = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
def artifact(name):
    p = out / name; p.parent.mkdir(parents=True, exist_ok=True); return p, name
def decode():
    t = time.perf_counter()
    with av.open(str(clip)) as c:
        s = c.streams.video[0]; s.thread_type = "AUTO"
        for _ in c.decode(s): pass
    return time.perf_counter() - t
found = discover()
ratios = {}
for name in names:
    plugin = found[name].plugin
    runs_ = []
    for _ in range(runs):
        d = decode()
        ctx = Context(job_id="b", input_key="c", options=dict(getattr(plugin, "defaults", {})),
                      progress=lambda f: None, artifact=artifact, logger=logging.getLogger("b"))
        t = time.perf_counter(); plugin.run(clip, ctx); runs_.append((time.perf_counter() - t) / d)
    ratios[name] = sorted(runs_)[len(runs_) // 2]
print(json.dumps(ratios))
"""


def before(rev: str, clip: Path, tmp: Path, runs: int) -> dict[str, float]:
    """Each plugin of an older commit, run the old way in a child process: cost in decodes."""
    tree = tmp / f"before-{rev}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev, "forgesyte"], capture_output=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    proc = subprocess.run([sys.executable, "-c", BEFORE, str(clip), str(tmp / "before-out"), str(runs),
                           ",".join(OLD_CHAIN)], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=24.0)
    parser.add_argument("--before", metavar="REV", help="also time the plugins of this older commit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        spec = VideoSpec(width=1280, height=720, fps=30, seconds=args.seconds, audio="aac")
        clip = make_video(tmp / "clip.mp4", spec, frame_fn)
        decode = median([raw_decode(clip) for _ in range(args.runs)])
        print(f"clip: {spec.width}x{spec.height}, {spec.fps} fps, {args.seconds:g} s ({spec.frames} frames), "
              f"H.264 + AAC, {clip.stat().st_size / 1e6:.1f} MB; {os.cpu_count()} CPUs; "
              f"median of {args.runs} paired runs")
        old = before(args.before, clip, tmp, args.runs) if args.before else {}
        head = "| plugin | seconds | cost (decodes) |" + (f" before ({args.before}) |" if old else "")
        print(head)
        print("|---|---:|---:|" + ("---:|" if old else ""))
        print(f"| one threaded decode (baseline) | {decode:.3f} | 1.00x |" + (" 1.00x |" if old else ""))
        loader = Loader()
        for name, info in discover().items():
            if info.error:
                print(f"| {name} | - | not loaded: {info.error} |" + (" |" if old else ""))
                continue
            t, ratio = paired(lambda n, plugin=info.plugin, name=name: run_alone(plugin, clip, tmp / f"alone-{name}"),
                              clip, args.runs)
            was = f" {old[name]:.2f}x |" if name in old else (" - |" if old else "")
            print(f"| {name} alone | {t:.3f} | {ratio:.2f}x |{was}")
        if old:
            t, ratio = paired(lambda n: run_job(OLD_CHAIN, clip, tmp, loader, n)[0], clip, args.runs)
            total = sum(old[n] for n in OLD_CHAIN)
            print(f"| chain {','.join(OLD_CHAIN)} | {t:.3f} | {ratio:.2f}x | {total:.2f}x |")
        documents = []

        def full_chain(n: int) -> float:
            elapsed, document = run_job(CHAIN, clip, tmp, loader, 100 + n)
            documents.append(document)
            return elapsed
        t, ratio = paired(full_chain, clip, args.runs)
        print(f"| chain {','.join(CHAIN)} | {t:.3f} | **{ratio:.2f}x** |" + (" - |" if old else ""))
        if "ocr" in discover() and not discover()["ocr"].error:
            full = CHAIN + ["ocr"]
            t, ratio = paired(lambda n: run_job(full, clip, tmp, loader, 200 + n)[0], clip, args.runs)
            print(f"| chain {','.join(full)} | {t:.3f} | {ratio:.2f}x |" + (" - |" if old else ""))
        document = documents[-1]["plugins"]
        print(f"\nscenes: {len(document['scenes']['cuts'])} cuts at frames "
              f"{[c['frame'] for c in document['scenes']['cuts']]}; fingerprint: "
              f"{len(document['fingerprint']['hashes'])} hashes; speech: {document['speech']['speech_s']} s")


if __name__ == "__main__":
    main()
