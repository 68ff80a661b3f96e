"""Ingest latency: from a file's close (or rename into the inbox) to its job being pending.

For each settle window, a fresh daemon; N distinct small videos are written
one at a time (spaced, so each measures its own latency rather than queueing),
half by write+close under the final name and half by write to a hidden temp
name + rename (rsync's way). Latency = job's created_at - close/rename time,
both from this machine's clock. Also measures sha256 cost per GB, which is
what dedup adds per file.

    .venv/bin/python bench/ingest.py [--files 60] [--hash-gb 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import Daemon, median, p95, wait_for

from forgesyte.daemon.intake import sha256_file
from forgesyte.storage.ids import parse_iso
from forgesyte.storage.jobs import JobStore
from tests.videogen import VideoSpec, make_video


def latencies(clip: bytes, settle: float, files: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"close": [], "rename": []}
    with Daemon(f"settle_seconds = {settle}\nworkers = 2\n") as d:
        time.sleep(0.5)
        marks: dict[str, tuple[str, float]] = {}
        for i in range(files):
            key = f"f{i:03d}.mp4"
            if i % 2 == 0:
                with open(d.inbox / key, "wb") as fh:
                    fh.write(clip + b"%d" % i)
                marks[key] = ("close", time.time())
            else:
                tmp = d.inbox / f".{key}.tmp123"
                tmp.write_bytes(clip + b"%d" % i)
                os.rename(tmp, d.inbox / key)
                marks[key] = ("rename", time.time())
            time.sleep(0.05)

        def all_seen():
            jobs = JobStore(d.state, readonly=True).all()
            return jobs if len(jobs) == files else None

        for job in wait_for(all_seen, timeout=120, interval=0.1):
            how, at = marks[job["input"]]
            out[how].append(parse_iso(job["created_at"]).timestamp() - at)
    return out


def hash_cost(gb: float) -> tuple[float, float]:
    """Seconds to sha256 `gb` GB from the page cache, and the raw read time of the same."""
    with tempfile.NamedTemporaryFile(dir=os.environ.get("TMPDIR", "/var/tmp")) as fh:
        block = os.urandom(1 << 20)
        for _ in range(int(gb * 1024)):
            fh.write(block)
        fh.flush()
        path = fh.name
        with open(path, "rb", buffering=0) as r:  # warm the cache, and time a plain read
            start = time.perf_counter()
            while r.read(4 << 20):
                pass
            read_s = time.perf_counter() - start
        start = time.perf_counter()
        sha256_file(path)
        return time.perf_counter() - start, read_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--hash-gb", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_video(Path(tmp) / "c.mp4", VideoSpec(width=160, height=120, seconds=0.5)).read_bytes()
    print(f"{args.files} files per window ({len(clip)} bytes each), half close-in, half rename-in")
    print(f"{'window':>7} | {'close: median':>13} | {'p95':>6} | {'rename: median':>14} | {'p95':>6} | {'cost over window':>16}")
    for settle in (0.25, 0.5, 2.0):
        lat = latencies(clip, settle, args.files)
        both = lat["close"] + lat["rename"]
        print(f"{settle:>5.2f} s | {median(lat['close']):>11.3f} s | {p95(lat['close']):>4.2f} s | "
              f"{median(lat['rename']):>12.3f} s | {p95(lat['rename']):>4.2f} s | "
              f"{median(both) - settle:>+14.3f} s")
    hashed, read = hash_cost(args.hash_gb)
    print(f"sha256 of {args.hash_gb:g} GB (page cache): {hashed:.2f} s "
          f"({args.hash_gb / hashed:.2f} GB/s; plain read {read:.2f} s); "
          f"a 4 GB file: ~{4 * hashed / args.hash_gb:.1f} s")


if __name__ == "__main__":
    main()
