"""The job store at scale: per-job cost, CLI latency, ingest throughput, daemon memory.

    .venv/bin/python bench/store.py [--history 100000] [--runs 5] [--clips 1000] [--backlog 20000]
    .venv/bin/python bench/store.py --before /tmp/old [--history 100000]   (CLI: an older tree vs this one)

1. Per-job store cost (create + claim + complete) with 1,000 and with
   `--history` jobs already on record; "unbatched" flushes after every
   transition (what a CLI writer does), "daemon" flushes once per job (the
   daemon batches more than that under load). Baseline in the same run: plain
   TinyDB (stock JSONStorage, one record per job, three writes per job).
2. Per-flush cost with 1,000 and with `--backlog` jobs pending (the daemon's
   steady state while a library it was pointed at waits): flat, because a
   flush appends only what changed to the journal.
3. Whole-process wall time of CLI commands against the big store.
4. Resident memory of the daemon holding the big store.
5. End-to-end ingest of small clips with the metadata plugin on 2 workers,
   against a process-per-file probe (the `watchmedo shell-command` way: one
   Python + PyAV process per file, two at a time); `--clips 0` skips it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import Daemon, median, wait_for

from forgesyte.storage.ids import parse_iso
from forgesyte.storage.jobs import JobStore
from tests.videogen import VideoSpec, make_video

PLUGINS = ["metadata"]


def fill(state: Path, n: int) -> None:
    """n finished jobs on record, written in batches as the daemon would."""
    store = JobStore(state, autoflush=False)
    for i in range(n):
        job = store.create(f"cam{i % 50}/clip-{i:06d}.mp4", size=1000 + i, mtime_ns=i,
                           sha256=f"{i:064x}", plugins=PLUGINS)
        store.claim(job["id"])
        if i % 20 == 0:
            store.fail(job["id"], "The file is not a decodable video.")
        else:
            store.complete(job["id"], f"cam{i % 50}/clip-{i:06d}.mp4-{job['id']}/results.json")
        if i % 1000 == 999:
            store.flush()
    store.close()


def per_job_cost(state: Path, jobs: int, flush_each_transition: bool) -> float:
    store = JobStore(state, autoflush=flush_each_transition)
    start = time.perf_counter()
    for i in range(jobs):
        job = store.create(f"new/{time.time_ns()}-{i}.mp4", size=1, mtime_ns=1,
                           sha256=f"{time.time_ns():064x}", plugins=PLUGINS)
        store.claim(job["id"])
        store.complete(job["id"], "x/results.json")
        if not flush_each_transition:
            store.flush()
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed / jobs * 1000


def backlog(state: Path, pending: int) -> None:
    """`pending` jobs waiting (a library just dropped in), written as the daemon would."""
    store = JobStore(state, autoflush=False)
    for i in range(pending):
        store.create(f"lib/{i // 500}/clip-{i:06d}.mp4", size=1000 + i, mtime_ns=i,
                     sha256=f"{i:064x}", plugins=PLUGINS)
        if i % 1000 == 999:
            store.flush()
    store.close()


def flush_cost(state: Path, jobs: int) -> float:
    """ms per flush of one finished job (claim + complete), the daemon's steady state,
    while the rest of the backlog stays pending."""
    store = JobStore(state, autoflush=False)
    waiting = [j["id"] for j in store.newest(jobs, "pending")]
    start = time.perf_counter()
    for job_id in waiting:
        store.claim(job_id)
        store.complete(job_id, "x/results.json")
        store.flush()
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed / len(waiting) * 1000


def plain_tinydb_cost(n_existing: int, jobs: int) -> float:
    from tinydb import TinyDB

    with tempfile.TemporaryDirectory() as tmp:
        db = TinyDB(os.path.join(tmp, "db.json"))
        table = db.table("jobs")
        table.insert_multiple({"id": str(i), "status": "completed", "input": f"c/{i}.mp4",
                               "sha256": f"{i:064x}", "output": "x"} for i in range(n_existing))
        start = time.perf_counter()
        for i in range(jobs):
            doc_id = table.insert({"id": f"n{i}", "status": "pending", "input": f"n/{i}.mp4"})
            table.update({"status": "running"}, doc_ids=[doc_id])
            table.update({"status": "completed"}, doc_ids=[doc_id])
        elapsed = time.perf_counter() - start
        db.close()
    return elapsed / jobs * 1000


def cli_ms(env: dict, args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "forgesyte", *args], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return median(times) * 1000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


PROBE = """
import json, sys, av
path, out = sys.argv[1], sys.argv[2]
with av.open(path) as c:
    v = c.streams.video[0]
    doc = {"format": c.format.name, "duration_s": c.duration / 1e6, "codec": v.codec_context.name,
           "width": v.codec_context.width, "height": v.codec_context.height,
           "fps": float(v.average_rate), "frames": v.frames}
    next(c.decode(v))
with open(out, "w") as fh:
    json.dump(doc, fh)
"""


def ingest(clip: bytes, n: int) -> tuple[float, float]:
    """(forgesyte jobs/s, process-per-file jobs/s) on the same n clips."""
    with Daemon("settle_seconds = 0.2\nworkers = 2\n") as d:
        time.sleep(0.5)
        for i in range(n):
            (d.inbox / f"b{i // 200}").mkdir(exist_ok=True)
            (d.inbox / f"b{i // 200}/c{i:05d}.webm").write_bytes(clip + b"%d" % i)

        def done():
            if not (d.state / "jobs" / "manifest.json").exists():
                return None
            store = JobStore(d.state, readonly=True)
            return store.all() if store.counts()["completed"] == n else None
        jobs = wait_for(done, timeout=600, interval=0.2)
        first = min(parse_iso(j["created_at"]).timestamp() for j in jobs)
        last = max(parse_iso(j["finished_at"]).timestamp() for j in jobs)
        ours = n / (last - first)
        files = sorted(d.inbox.rglob("*.webm"))
        out = d.home / "probe-out"
        out.mkdir()
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: subprocess.run(
                [sys.executable, "-c", PROBE, str(p), str(out / (p.name + ".json"))], check=True),
                files))
        theirs = len(files) / (time.perf_counter() - start)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--before", type=Path, metavar="TREE",
                        help="an older source tree (e.g. `git archive ff7709e | tar -x -C /tmp/old`): "
                             "only compare its CLI wall time with this tree's, interleaved, same run")
    args = parser.parse_args()
    if args.before:
        compare_cli(args.before.resolve(), args.history, args.runs + 4)
        return

    with tempfile.TemporaryDirectory(prefix="forgesyte-store-") as tmp:
        small, big = Path(tmp) / "small" / "state", Path(tmp) / "big" / "state"
        t = time.perf_counter()
        fill(small, 1000)
        fill(big, args.history)
        print(f"# filled stores of 1,000 and {args.history:,} jobs in {time.perf_counter() - t:.0f} s")

        print("\n## Per-job store cost (create + claim + complete), ms, median of", args.runs, "runs")
        print(f"| mode | 1,000 on record | {args.history:,} on record | ratio |")
        print("|---|---:|---:|---:|")
        for mode, each in (("unbatched (flush per transition)", True), ("daemon (flush per job)", False)):
            a = median([per_job_cost(small, 200, each) for _ in range(args.runs)])
            b = median([per_job_cost(big, 200, each) for _ in range(args.runs)])
            print(f"| {mode} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
        base1 = median([plain_tinydb_cost(1000, 50) for _ in range(3)])
        base3 = median([plain_tinydb_cost(3000, 50) for _ in range(3)])
        print(f"| baseline: plain TinyDB, one file | {base1:.2f} | {base3:.2f} (at 3,000) | {base3 / base1:.2f}x |")

        print(f"\n## Per-flush cost with a backlog (one job finished per flush), ms, median of {args.runs} runs")
        print("| pending jobs | ms per flush |")
        print("|---:|---:|")
        costs = {}
        for pending in (1_000, args.backlog):
            state = Path(tmp) / f"backlog-{pending}" / "state"
            backlog(state, pending + 200 * args.runs)
            costs[pending] = median([flush_cost(state, 200) for _ in range(args.runs)])
            print(f"| {pending:,} | {costs[pending]:.2f} |")
        print(f"| ratio | {costs[args.backlog] / costs[1_000]:.2f}x |")

        env = {k: v for k, v in os.environ.items() if not k.startswith("FORGESYTE_")}
        env.update(FORGESYTE_HOME=str(big.parent))
        # As installed: with bytecode caches (a first run writes them), not compiling every import.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "forgesyte", "status"], env=env, stdout=subprocess.DEVNULL)
        reader = JobStore(big, readonly=True)
        some = reader.newest(1)[0]
        print(f"\n## CLI wall time with {args.history:,} jobs on record, ms, median of {args.runs + 2} runs")
        print("| command | ms |")
        print("|---|---:|")
        startup = median([_time([sys.executable, "-c", "pass"], env) for _ in range(args.runs + 2)])
        print(f"| baseline: `python -c pass` | {startup * 1000:.0f} |")
        for label, cmd in (("status --json", ["status", "--json"]),
                           ("list --limit 20", ["list", "--limit", "20"]),
                           ("list --limit 20 --json", ["list", "--limit", "20", "--json"]),
                           ("show <id>", ["show", some["id"]]),
                           ("show <old id>", ["show", reader.all()[-5]["id"]] if args.history < 5000 else
                            ["show", _oldest_id(reader)]),
                           ("show <input key>", ["show", "cam7/clip-000007.mp4"]),
                           ("show <id prefix>", ["show", some["id"][:12]])):
            print(f"| `{label}` | {cli_ms(env, cmd, args.runs + 2):.0f} |")

        main_rss, worker_rss = daemon_rss(env)
        backlog_env = dict(env, FORGESYTE_HOME=str(Path(tmp) / f"backlog-{args.backlog}"))
        backlog_rss, _ = daemon_rss(backlog_env)
        print("\n## Daemon memory (RSS MB, 2 s after start)")
        print("| process | RSS MB |\n|---|---:|")
        print(f"| daemon (main), {args.history:,} finished jobs on record | {main_rss:.0f} |")
        print(f"| daemon (main), {args.backlog:,} jobs pending (inputs absent: parked) | {backlog_rss:.0f} |")
        for i, r in enumerate(worker_rss):
            print(f"| child process {i + 1} (worker or spawn helper) | {r:.0f} |")

    if not args.clips:
        return
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_video(Path(tmp) / "c.webm", VideoSpec(codec="libvpx-vp9", width=160, height=120,
                                                           seconds=0.5, audio=None)).read_bytes()
    ours, theirs = ingest(clip, args.clips)
    print(f"\n## Ingest of {args.clips} small clips (160x120 VP9, 0.5 s), metadata plugin, 2 cores")
    print("| pipeline | jobs/s |\n|---|---:|")
    print(f"| forgesyte (2 workers; first created -> last finished) | {ours:.0f} |")
    print(f"| process per file, 2 at a time (watchmedo shell-command way) | {theirs:.0f} |")
    print(f"| ratio | {ours / theirs:.1f}x |")


FILL = """
import sys
from forgesyte.storage.jobs import JobStore
store = JobStore(sys.argv[1], autoflush=False)
for i in range(int(sys.argv[2])):
    job = store.create(f"cam{i % 50}/clip-{i:06d}.mp4", size=1000 + i, mtime_ns=i, sha256=f"{i:064x}",
                       plugins=["metadata"])
    store.claim(job["id"])
    if i % 20 == 0:
        store.fail(job["id"], "The file is not a decodable video.")
    else:
        store.complete(job["id"], f"cam{i % 50}/clip-{i:06d}.mp4-{job['id']}/results.json")
    if i % 1000 == 999:
        store.flush()
store.close()
print(JobStore(sys.argv[1], readonly=True).newest(1)[0]["id"])
"""


def compare_cli(before: Path, history: int, runs: int) -> None:
    """CLI wall time on `history` jobs: an older tree's store against this one's, each
    filled by its own code, commands interleaved so both see the same machine load."""
    trees = {"before": before, "after": Path(__file__).resolve().parent.parent}
    with tempfile.TemporaryDirectory(prefix="forgesyte-store-ab-") as tmp:
        envs, newest = {}, {}
        for name, tree in trees.items():
            home = Path(tmp) / name
            (home / "state").mkdir(parents=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith("FORGESYTE_")}
            env.update(PYTHONPATH=str(tree), FORGESYTE_HOME=str(home))
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: with bytecode caches
            start = time.perf_counter()
            newest[name] = subprocess.run([sys.executable, "-c", FILL, str(home / "state"), str(history)],
                                          env=env, check=True, capture_output=True, text=True).stdout.strip()
            print(f"# {name} ({tree}): filled {history:,} jobs in {time.perf_counter() - start:.0f} s")
            envs[name] = env
        commands = [("status --json", ["status", "--json"]), ("list --limit 20", ["list", "--limit", "20"]),
                    ("show <id>", ["show", None]), ("show <input key>", ["show", "cam7/clip-000007.mp4"])]
        for name in trees:  # write the bytecode caches
            for _label, cmd in commands:
                _time([sys.executable, "-m", "forgesyte", *[newest[name] if a is None else a for a in cmd]],
                      envs[name])
        startup = median([_time([sys.executable, "-c", "pass"], envs["after"]) for _ in range(runs)])
        print(f"\n## CLI wall time with {history:,} jobs on record, ms, median of {runs} interleaved runs")
        print(f"baseline `python -c pass`: {startup * 1000:.0f} ms\n")
        print("| command | before | after | after/before |\n|---|---:|---:|---:|")
        for label, cmd in commands:
            times: dict[str, list[float]] = {name: [] for name in trees}
            for _ in range(runs):
                for name in trees:
                    argv = [newest[name] if a is None else a for a in cmd]
                    times[name].append(_time([sys.executable, "-m", "forgesyte", *argv], envs[name]))
            b, a = median(times["before"]) * 1000, median(times["after"]) * 1000
            print(f"| `{label}` | {b:.0f} | {a:.0f} | {a / b:.2f}x |")


def daemon_rss(env: dict) -> tuple[float, list[float]]:
    """(main process RSS, children's RSS) of `forgesyte run` on env's home, 2 s after start."""
    proc = subprocess.Popen([sys.executable, "-m", "forgesyte", "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.readline()
    time.sleep(2)
    main_rss = rss_mb(proc.pid)
    children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    worker_rss = [rss_mb(p) for p in children]
    proc.terminate()
    proc.wait(timeout=60)
    return main_rss, worker_rss


def _time(cmd, env) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _oldest_id(reader: JobStore) -> str:
    return reader._manifest.chunks[0]["min_id"]


if __name__ == "__main__":
    main()
