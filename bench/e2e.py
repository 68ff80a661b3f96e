"""Drop-to-completed latency for a 10 s 720p H.264 clip through a real daemon.

For each run: a fresh home and daemon, the clip written into the inbox and
closed, then the job store polled (read-only, as the CLI does) until the job
is completed. Reports the median and the split into settle wait
(close -> job created), queue (created -> started) and processing
(started -> finished), for the default 2 s settle window and for 0.5 s.

    .venv/bin/python bench/e2e.py [--runs 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import Daemon, median, wait_for

from forgesyte.storage.ids import parse_iso
from forgesyte.storage.jobs import JobStore
from tests.videogen import VideoSpec, make_video


def one_run(clip: bytes, settle: float) -> dict[str, float]:
    with Daemon(f"settle_seconds = {settle}\n") as d:
        time.sleep(0.5)  # let workers finish spawning: measure steady state, not start-up
        dest = d.inbox / "clip.mp4"
        with open(dest, "wb") as fh:
            fh.write(clip)
        closed = time.time()

        def done():
            if not (d.state / "jobs" / "manifest.json").exists():
                return None
            jobs = JobStore(d.state, readonly=True).all()
            return jobs[0] if jobs and jobs[0]["status"] == "completed" else None

        job = wait_for(done)
        seen = time.time()
    return {
        "total": seen - closed,
        "settle": parse_iso(job["created_at"]).timestamp() - closed,
        "queue": parse_iso(job["started_at"]).timestamp() - parse_iso(job["created_at"]).timestamp(),
        "process": parse_iso(job["finished_at"]).timestamp() - parse_iso(job["started_at"]).timestamp(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = make_video(Path(tmp) / "clip.mp4", VideoSpec(width=1280, height=720, fps=25, seconds=10))
        clip = path.read_bytes()
    print(f"clip: 10 s, 1280x720, 25 fps, H.264 + AAC, {len(clip) / 1e6:.1f} MB; {args.runs} runs each")
    print(f"{'settle window':>14} | {'drop->completed':>15} | {'settle wait':>11} | {'queue':>7} | {'processing':>10}")
    for settle in (2.0, 0.5):
        runs = [one_run(clip, settle) for _ in range(args.runs)]
        m = {k: median([r[k] for r in runs]) for k in runs[0]}
        print(f"{settle:>12.1f} s | {m['total']:>13.3f} s | {m['settle']:>9.3f} s | "
              f"{m['queue']:>5.3f} s | {m['process']:>8.3f} s")


if __name__ == "__main__":
    main()
