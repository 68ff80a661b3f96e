"""The cluster path (`run --scheduler` + `forgesyte worker`) against local workers.

Two measurements, each with real processes on this machine (a `dask scheduler`
from distributed's CLI module, `forgesyte worker`s, `forgesyte run`):

1. Per-job overhead for tiny clips: N distinct 0.2 s clips, `metadata` only,
   one job slot (local `workers = 1`, or one worker with `--nprocs 1`), so the
   jobs run back to back. Per-job cost = (last job's finished_at - first job's
   started_at) / N, from the job records. Local and cluster runs alternate so
   both see the same noise; the table gives medians and the difference
   (target: cluster <= local + 20 ms), and, for scale, the round trip of a
   trivial task through a scheduler and a plain Dask worker: the part of the
   difference that is Dask's own on this machine at that moment.
2. Throughput of a decode-heavy chain (`motion`, which decodes every frame) on
   10 s 640x360 clips: jobs per minute with 1 and 2 cluster workers (one slot
   each), and local workers = 1 and 2 as the baseline, measured in the same run.

    .venv/bin/python bench/cluster.py [--runs 3] [--tiny 40] [--heavy 6]

Needs the cluster extra (`pip install -e '.[cluster]'`). On a 2-core machine
two workers share the cores with the scheduler and the daemon: expect well
under 2x from the second worker; on separate machines each brings its own.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Daemon, median, wait_for

from forgesyte.storage.ids import parse_iso
from forgesyte.storage.jobs import JobStore
from tests.videogen import VideoSpec, make_video


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A scheduler and `n` forgesyte workers for one daemon's home."""

    def __init__(self, daemon: Daemon, workers: int):
        self.daemon = daemon
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.workers: list[subprocess.Popen] = []
        self.count = workers

    def start_workers(self) -> None:
        """After the daemon wrote its marker: a worker refuses folders without one."""
        for i in range(self.count):
            proc = subprocess.Popen(
                [sys.executable, "-m", "forgesyte", "worker", "--scheduler", self.address, "--nprocs", "1",
                 "--name", f"bench-{i}"], env=self.daemon.env,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
            self.workers.append(proc)
        for proc in self.workers:
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            line = proc.stdout.readline().decode() if ready else ""
            assert "is running jobs" in line, f"worker did not start: {line!r}"

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def run_batch(clips: list[bytes], config: str, cluster_workers: int = 0) -> float:
    """Drop every clip into a fresh daemon's inbox; seconds from the first job's start
    to the last job's finish (from the records: no settle window, no start-up)."""
    daemon = Daemon(config)
    cluster = Cluster(daemon, cluster_workers) if cluster_workers else None
    if cluster:
        daemon.args = ("--scheduler", cluster.address)
    try:
        daemon.start()
        if cluster:
            cluster.start_workers()
        time.sleep(1.0)  # pools spawned and warm: measure steady state, not start-up
        for i, data in enumerate(clips):
            (daemon.inbox / f"c{i:03d}.mp4").write_bytes(data)

        def all_done():
            try:
                jobs = JobStore(daemon.state, readonly=True).all()
            except Exception:  # the store is being written: look again
                return None
            done = [j for j in jobs if j["status"] in ("completed", "failed")]
            return jobs if len(jobs) == len(clips) and len(done) == len(clips) else None

        jobs = wait_for(all_done, timeout=900, interval=0.1)
        failed = [j for j in jobs if j["status"] != "completed"]
        assert not failed, failed[0]["error"]
        first = min(parse_iso(j["started_at"]).timestamp() for j in jobs)
        last = max(parse_iso(j["finished_at"]).timestamp() for j in jobs)
        return last - first
    finally:
        daemon.stop()
        if cluster:
            cluster.stop()


def dask_floor(n: int) -> float:
    """Median seconds of one trivial task through a scheduler and a plain Dask worker and back,
    as the daemon sees it (submit, then the done callback): the part of the cluster path
    that is Dask's, on this machine, now."""
    import queue

    from distributed import Client

    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}",
                                   "--nthreads", "1", "--no-nanny", "--no-dashboard"],
                                  env={**os.environ, "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    try:
        client = Client(f"tcp://127.0.0.1:{port}", timeout=60, set_as_default=False)
        client.wait_for_workers(1, timeout=120)
        done: queue.SimpleQueue = queue.SimpleQueue()
        times = []
        for i in range(n + 5):
            start = time.perf_counter()
            future = client.submit(len, "x" * i, pure=False)
            future.add_done_callback(done.put)
            done.get()
            future.release()
            if i >= 5:  # warm
                times.append(time.perf_counter() - start)
        client.close()
        return median(times)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def distinct(data: bytes, n: int) -> list[bytes]:
    """n copies that are not duplicates of each other (trailing bytes after the container)."""
    return [data + f"#{i}".encode() for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tiny", type=int, default=40, help="tiny clips per overhead run")
    parser.add_argument("--heavy", type=int, default=6, help="10 s clips per throughput run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tiny = make_video(Path(tmp) / "tiny.mp4", VideoSpec(width=64, height=48, fps=10, seconds=0.2,
                                                            audio=None)).read_bytes()
        heavy = make_video(Path(tmp) / "heavy.mp4", VideoSpec(width=640, height=360, fps=25, seconds=10,
                                                              audio=None)).read_bytes()
    base = "settle_seconds = 0.2\nscan_interval = 600\nplugin_timeout = 600\n"

    print(f"1. per-job overhead: {args.tiny} tiny clips (0.2 s, 64x48), plugin metadata, one job slot; "
          f"{args.runs} runs each, alternating")
    local, remote, floor = [], [], []
    for _ in range(args.runs):
        local.append(run_batch(distinct(tiny, args.tiny), base + "workers = 1\nplugins = ['metadata']\n")
                     / args.tiny)
        remote.append(run_batch(distinct(tiny, args.tiny), base + "plugins = ['metadata']\n", 1) / args.tiny)
        floor.append(dask_floor(args.tiny))
    print(f"{'path':>28} | {'per job (median)':>16} | runs")
    print(f"{'local worker':>28} | {median(local) * 1e3:13.1f} ms | " + ", ".join(f"{v*1e3:.1f}" for v in local))
    print(f"{'cluster worker (--nprocs 1)':>28} | {median(remote) * 1e3:13.1f} ms | "
          + ", ".join(f"{v*1e3:.1f}" for v in remote))
    diffs = [r - lo for r, lo in zip(remote, local)]
    print(f"{'cluster - local':>28} | {median(diffs) * 1e3:+13.1f} ms | (target <= +20 ms)")
    print(f"{'Dask round trip (trivial)':>28} | {median(floor) * 1e3:13.1f} ms | "
          + ", ".join(f"{v*1e3:.1f}" for v in floor))

    if not args.heavy:
        return
    print(f"\n2. throughput: {args.heavy} clips of 10 s 640x360 25 fps, plugin motion (decodes every frame); "
          f"{args.runs} runs each")
    heavy_config = base + "plugins = ['motion']\n"
    setups = [("local, workers = 1", heavy_config + "workers = 1\n", 0),
              ("local, workers = 2", heavy_config + "workers = 2\n", 0),
              ("cluster, 1 worker", heavy_config, 1),
              ("cluster, 2 workers", heavy_config, 2)]
    spans: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    for _ in range(args.runs):
        for name, config, workers in setups:
            spans[name].append(run_batch(distinct(heavy, args.heavy), config, workers))
    one = median(spans["cluster, 1 worker"])
    print(f"{'setup':>20} | {'jobs/min':>8} | {'vs cluster, 1 worker':>20}")
    for name, _, _ in setups:
        span = median(spans[name])
        print(f"{name:>20} | {60 * args.heavy / span:8.1f} | {one / span:19.2f}x")


if __name__ == "__main__":
    main()
