"""An existing library lands at once: N small videos already in the inbox at start.

    .venv/bin/python bench/backlog.py [--sizes 1000,20000] [--huge] [--store] [--restart]
                                      [--intake] [--no-daemon] [--runs 3] [--limit-s 900] [--cache DIR]

Daemon side. For each N (same run, so the ratio compares like with like):
a fresh state and output folder, the inbox pointed at a cached library of N
distinct tiny videos (one 64x64 H.264 clip of 1.7 kB plus distinct trailing
bytes, which still decodes; folders of 1,000 files, made once and kept under
--cache, so their ctime is old: files that were there before the daemon).
The daemon runs with its defaults (2 workers, 2 s settle window) and the
`metadata` chain; the bench reads its log as it is written and reports

  first done   seconds from spawning `forgesyte run` to the first completed job
  registered   seconds until every file is a job (pending or later)
  rate         completed jobs/s: the run from first to last completion split
               into 10 windows of equal job counts; the median window
  all done     seconds from spawn to the last completion
  main RSS     the daemon main process's peak resident memory (VmHWM)

`--huge` adds N = 100,000 once. `--limit-s` stops a size that has not finished
by then (its figures then cover only what completed, and say so).

Intake (`--intake`): the daemon's own share of registering N files,
in-process (a scan thread feeding the intake, `step` in a loop, a store flush
after each): intake time per file, of which store creates, and the flushes.

Restart (`--restart`): for each N a daemon is stopped (SIGTERM) as soon as
every file is registered, and started again on that state with ~N jobs
pending: its first completed job, its rate over the next 500 jobs, its RSS
(recovery reads every pending job; the scan finds every file known).

Store side (`--store`): what the job store costs the daemon with P pending
jobs in it (P = the same sizes), in-process, the daemon's way (autoflush
off): registering P files (amortized per file, flushes and checkpoints
included), then jobs at P pending (claim + complete + one more file, flushed
every few jobs): amortized time per job, median and longest flush, how many
checkpoints and their total time, bytes written per job, and the memory the
store holds per pending job. Per-flush and per-job cost must not grow with P
(issue 10, item 5).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import median

from tests.videogen import VideoSpec, make_video

CLIP = VideoSpec(codec="libx264", width=64, height=64, fps=10, seconds=0.2, audio=None)
PER_FOLDER = 1000
JOB_LINE = re.compile(r"\bjob (\S+) (.*): (pending|completed|failed)\b")


# -- the library --------------------------------------------------------------
def library(cache: Path, n: int) -> Path:
    """N distinct small videos, made once: `<cache>/lib-<n>/dNNN/fNNNNNN.mp4`."""
    folder = cache / f"lib-{n}"
    done = cache / f"lib-{n}.done"
    if done.exists():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    clip_path = cache / "clip.mp4"
    if not clip_path.exists():
        make_video(cache / "clip.tmp.mp4", CLIP)
        os.replace(cache / "clip.tmp.mp4", clip_path)
    clip = clip_path.read_bytes()
    print(f"making a library of {n:,} videos under {folder} (once) ...", flush=True)
    for i in range(n):
        sub = folder / f"d{i // PER_FOLDER:03d}"
        if i % PER_FOLDER == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:06d}.mp4").write_bytes(clip + b"\nforgesyte-bench %d\n" % i)
    done.touch()
    return folder


# -- one daemon run -------------------------------------------------------------
class Run:
    """A real `forgesyte run` over a library; its log lines timestamped as they arrive."""

    def __init__(self, inbox: Path, n: int, settle: float, home: Path | None = None):
        self.n = n
        self.tmp = tempfile.TemporaryDirectory(prefix="forgesyte-backlog-") if home is None else None
        self.home = home = Path(self.tmp.name) if home is None else home
        (home / "forgesyte.toml").write_text(f'plugins = ["metadata"]\nsettle_seconds = {settle}\n')
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("FORGESYTE_", "NOTIFY_SOCKET"))}
        self.env.update(FORGESYTE_HOME=str(home), FORGESYTE_INBOX=str(inbox),
                        FORGESYTE_CONFIG=str(home / "forgesyte.toml"))
        self.pending: list[float] = []
        self.finished: list[float] = []
        self.failed = 0
        self.log_tail: list[str] = []
        self.hwm_kb = 0

    def _read_log(self, stream) -> None:
        for raw in stream:
            now = time.monotonic()
            line = raw.decode(errors="replace")
            match = JOB_LINE.search(line)
            if match is None:
                self.log_tail = (self.log_tail + [line.rstrip()])[-20:]
                continue
            what = match.group(3)
            if what == "pending":
                self.pending.append(now)
            else:
                self.finished.append(now)
                self.failed += what == "failed"

    def _sample_memory(self, pid: int) -> None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.hwm_kb = max(self.hwm_kb, int(line.split()[1]))
        except OSError:
            pass

    def go(self, limit_s: float, until: Callable[[Run], bool] | None = None) -> dict:
        """Run until every file is done (or `until` says so, or `limit_s` passed), then stop
        the daemon with SIGTERM (running jobs go back to pending)."""
        until = until or (lambda run: len(run.finished) >= run.n)
        self.start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "forgesyte", "run"], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        reader = threading.Thread(target=self._read_log, args=(proc.stderr,), daemon=True)
        reader.start()
        deadline = self.start + limit_s
        try:
            while not until(self) and time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError("the daemon exited:\n" + "\n".join(self.log_tail))
                self._sample_memory(proc.pid)
                time.sleep(0.2)
            self._sample_memory(proc.pid)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            reader.join(timeout=10)
        return self.figures()

    def cleanup(self) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()

    def figures(self, windows: int = 10) -> dict:
        done = sorted(self.finished)
        rel = [t - self.start for t in done]
        rates = []
        if len(done) >= 2 * windows:
            size = len(done) // windows
            for w in range(windows):
                a, b = done[w * size], done[min(len(done) - 1, (w + 1) * size)]
                if b > a:
                    rates.append(size / (b - a))
        return {
            "n": self.n, "completed": len(done), "failed": self.failed,
            "first_done": rel[0] if rel else float("nan"),
            "registered": (max(self.pending) - self.start) if len(self.pending) >= self.n else float("nan"),
            "registered_count": len(self.pending),
            "all_done": rel[-1] if len(done) >= self.n else float("nan"),
            "rate": median(rates), "rss_mb": self.hwm_kb / 1024,
        }


HEADER = (f"{'N':>8} | {'first done':>10} | {'registered':>10} | {'rate':>8} | {'vs first N':>10} | "
          f"{'all done':>9} | {'main RSS':>8} | note")


def _row(r: dict, base: float) -> str:
    note = "" if r["completed"] >= r["n"] else (f"stopped at --limit-s: {r['completed']:,} completed, "
                                                f"{r['registered_count']:,} registered")
    if r["failed"]:
        note += f" {r['failed']} failed!"
    return (f"{r['n']:>8,} | {r['first_done']:>8.2f} s | {r['registered']:>8.1f} s | "
            f"{r['rate']:>6.0f}/s | {r['rate'] / base:>9.2f}x | {r['all_done']:>7.1f} s | "
            f"{r['rss_mb']:>5.0f} MB | {note}")


def daemon_side(args, cache: Path, sizes: list[int]) -> None:
    """`--runs` rounds; each round runs every size once, in order, so the ratio to the first
    size compares runs made under the same load. The last table holds the medians over
    rounds (the ratio: the median of each round's ratio)."""
    per_size: dict[int, list[dict]] = {n: [] for n in sizes}
    for round_no in range(args.runs):
        base = None
        for n in sizes:
            inbox = library(cache, n)
            print(f"round {round_no + 1}/{args.runs}, N = {n:,}: running ...", flush=True)
            run = Run(inbox, n, args.settle)
            try:
                result = run.go(args.limit_s)
            finally:
                run.cleanup()
            base = base or result["rate"]
            result["ratio"] = result["rate"] / base
            per_size[n].append(result)
            print(HEADER + "\n" + _row(result, result["rate"] / result["ratio"]), flush=True)
    print()
    print(f"median of {args.runs} run(s) per size")
    print(HEADER)
    for n in sizes:
        runs = per_size[n]
        merged = dict(runs[0])
        for key in ("first_done", "registered", "all_done", "rate", "rss_mb", "ratio"):
            merged[key] = median([r[key] for r in runs])
        merged["completed"] = min(r["completed"] for r in runs)
        merged["failed"] = sum(r["failed"] for r in runs)
        print(_row(merged, merged["rate"] / merged["ratio"]), flush=True)
    for n in sizes:
        print(f"  N = {n:,}: first done " + ", ".join(f"{r['first_done']:.2f}" for r in per_size[n])
              + " s; rate " + ", ".join(f"{r['rate']:.0f}" for r in per_size[n]) + "/s; RSS "
              + ", ".join(f"{r['rss_mb']:.0f}" for r in per_size[n]) + " MB", flush=True)


def restart_side(args, cache: Path, sizes: list[int], completions: int = 500) -> None:
    """A daemon stopped (SIGTERM) once every file is registered, so N - (a few) jobs are
    pending; then started again on the same state. Measured on the second start: seconds
    to its first completed job, its rate over the next `completions` jobs, main RSS."""
    print()
    print(f"restart with about N jobs pending (stopped after registering them all; "
          f"measured over the next {completions} jobs)")
    print(f"{'N':>8} | {'pending':>8} | {'first done':>10} | {'rate':>8} | {'main RSS':>8}")
    for n in sizes:
        inbox = library(cache, n)
        first = Run(inbox, n, args.settle)
        try:
            first.go(args.limit_s, until=lambda run: len(run.pending) >= run.n)
            left = n - len(first.finished)
            second = Run(inbox, min(left, completions), args.settle, home=first.home)
            result = second.go(args.limit_s)
        finally:
            first.cleanup()
        print(f"{n:>8,} | {left:>8,} | {result['first_done']:>8.2f} s | {result['rate']:>6.0f}/s | "
              f"{result['rss_mb']:>5.0f} MB", flush=True)


# -- the store on its own ----------------------------------------------------------
def _written() -> int:
    """Bytes this process has passed to write() so far (/proc/self/io wchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Timed:
    """Wraps one method of an object: how often it ran, for how long in all, the longest."""

    def __init__(self, obj, name: str):
        self.calls, self.total, self.longest = 0, 0.0, 0.0
        inner = getattr(obj, name, None)
        if inner is None:
            return

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent = time.perf_counter() - began
                self.calls, self.total = self.calls + 1, self.total + spent
                self.longest = max(self.longest, spent)
        setattr(obj, name, timed)


def store_side(pending_sizes: list[int], cycles: int = 6000, flush_every: int = 8) -> None:
    """The daemon's use of the store, without the daemon: register P files (a create each,
    a flush every 50, as intake does), then at P pending run `cycles` jobs through it
    (claim the oldest, complete it, register one more file; a flush every `flush_every`
    jobs, about what the loop does at a few hundred jobs/s). Amortized costs include the
    flushes and whatever the store does inside them (journal appends, checkpoints)."""
    from forgesyte.storage.jobs import JobStore

    print()
    print(f"store side, in-process (autoflush off, as the daemon): register P files, then {cycles:,} "
          f"jobs at P pending (claim+complete+create, a flush every {flush_every} jobs)")
    print(f"{'P':>8} | {'register/file':>13} | {'per job':>9} | {'flush: median':>13} | {'longest':>9} | "
          f"{'checkpoints':>11} | {'written/job':>11} | {'store RSS/pending':>17}")
    for p in pending_sizes:
        with tempfile.TemporaryDirectory(prefix="forgesyte-store-") as tmp:
            rss_before = _rss_kb()
            store = JobStore(Path(tmp), autoflush=False)
            began = time.perf_counter()
            for i in range(p):
                store.create(f"d{i // PER_FOLDER:03d}/f{i:06d}.mp4", size=1800, mtime_ns=i,
                             sha256=f"{i:064x}", plugins=["metadata"])
                if i % 50 == 49:
                    store.flush()
            store.flush()
            register = (time.perf_counter() - began) / p
            rss_per_pending = (_rss_kb() - rss_before) * 1024 / p
            flushes, checkpoints = [], _Timed(store, "checkpoint")
            queue = collections.deque(job["id"] for job in store.with_status("pending"))
            wrote = _written()
            began = time.perf_counter()
            for i in range(cycles):
                job_id = queue.popleft()
                store.claim(job_id)
                store.complete(job_id, f"x/{job_id}/results.json")
                queue.append(store.create(f"new/{i:06d}.mp4", size=1800, mtime_ns=i,
                                          sha256=f"{p + i:064x}", plugins=["metadata"])["id"])
                if i % flush_every == flush_every - 1:
                    t = time.perf_counter()
                    store.flush()
                    flushes.append(time.perf_counter() - t)
            per_job = (time.perf_counter() - began) / cycles
            written = (_written() - wrote) / cycles
            store.close()
        print(f"{p:>8,} | {register * 1e6:>10.0f} µs | {per_job * 1e3:>6.2f} ms | "
              f"{median(flushes) * 1e3:>10.2f} ms | {max(flushes) * 1e3:>6.0f} ms | "
              f"{checkpoints.calls:>4} ({checkpoints.total:>4.1f} s) | {written / 1024:>8.1f} kB | "
              f"{rss_per_pending:>12.0f} B", flush=True)


def _feed_scan(intake, root, selection) -> None:
    from forgesyte.daemon.watch import scan

    epoch = intake.feed_epoch
    for key in scan(root, selection):
        intake.feed(key, epoch)


def intake_side(cache: Path, sizes: list[int]) -> None:
    """The daemon's own share of registering N files, in-process: a scan thread feeding
    the intake, `step` in a loop as the daemon's loop calls it, a store flush after each
    step; time spent in the intake (store flushes excluded) per file."""
    from forgesyte.config import load_settings, prepare_directories
    from forgesyte.daemon.intake import Intake
    from forgesyte.daemon.selection import Selection
    from forgesyte.storage.jobs import JobStore
    from forgesyte.storage.paths import Root

    print()
    print("intake, in-process: registering N files present at start (store flushes excluded; wall time "
          "includes waiting for the GIL held by the scan and hash threads)")
    print(f"{'N':>8} | {'intake per file':>15} | {'main thread CPU':>15} | {'of which creates':>16} | "
          f"{'store flushes':>13}")
    for n in sizes:
        inbox = library(cache, n)
        with tempfile.TemporaryDirectory(prefix="forgesyte-intake-") as tmp:
            settings = load_settings({"home": tmp, "inbox": str(inbox)}, env={})
            prepare_directories(settings)
            root = Root(settings.inbox)
            store = JobStore(settings.state, autoflush=False)
            creates = _Timed(store, "create")
            intake = Intake(settings, root, store, scan_dir=lambda key: None)
            selection = Selection(settings.video_extensions, settings.ignore_patterns)

            thread = threading.Thread(target=_feed_scan, args=(intake, root, selection), daemon=True)
            thread.start()
            made, in_intake, cpu, in_flush = 0, 0.0, 0.0, 0.0
            while made < n:
                t, c = time.perf_counter(), time.thread_time()
                made += sum(1 for _, new in intake.step() if new)
                in_intake += time.perf_counter() - t
                cpu += time.thread_time() - c
                t = time.perf_counter()
                store.flush()
                in_flush += time.perf_counter() - t
                wait = intake.wait_hint()
                if wait:
                    time.sleep(min(wait, 0.05))
            intake.close()
            store.close()
        print(f"{n:>8,} | {in_intake / n * 1e6:>12.0f} µs | {cpu / n * 1e6:>12.0f} µs | "
              f"{creates.total / n * 1e6:>13.0f} µs | {in_flush:>11.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,20000", help="library sizes, the first is the baseline")
    parser.add_argument("--huge", action="store_true", help="also N = 100,000 (once)")
    parser.add_argument("--store", action="store_true", help="also measure the store on its own")
    parser.add_argument("--restart", action="store_true",
                        help="also: restart a daemon with about N jobs pending")
    parser.add_argument("--intake", action="store_true",
                        help="also: the intake's own cost per file, in-process")
    parser.add_argument("--no-daemon", action="store_true",
                        help="skip the fresh-start daemon runs (--restart still runs its own)")
    parser.add_argument("--runs", type=int, default=3,
                        help="rounds of the fresh-start runs (medians are reported)")
    parser.add_argument("--settle", type=float, default=2.0, help="settle window (default: the daemon's)")
    parser.add_argument("--limit-s", type=float, default=900.0, help="give up on one size after this long")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "FORGESYTE_BENCH_CACHE", Path.home() / ".cache" / "forgesyte-bench")) / "backlog")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] + ([100_000] if args.huge else [])
    if not args.no_daemon:
        daemon_side(args, args.cache, sizes)
    if args.restart:
        restart_side(args, args.cache, sizes)
    if args.intake:
        intake_side(args.cache, sizes)
    if args.store:
        store_side(sizes)


if __name__ == "__main__":
    main()
