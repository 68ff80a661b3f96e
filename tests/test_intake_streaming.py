"""A library already in the inbox streams in: bounded feed, bounded steps, a settle gate
whose cost is what is due, and the gate's stat (Root.stat_key) as strict as path_for.

Real files, real stores; the daemon-level test runs a real daemon subprocess.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forgesyte.config import load_settings, prepare_directories
from forgesyte.daemon.intake import PIPELINE, SCAN_AHEAD, Intake
from forgesyte.daemon.selection import Selection
from forgesyte.daemon.settle import SettleGate
from forgesyte.daemon.watch import scan
from forgesyte.storage.jobs import JobStore
from forgesyte.storage.paths import Root, UnsafeKey
from tests.conftest import wait_until
from tests.videogen import VideoSpec, make_video


def inputs(home) -> Counter:
    return Counter(j["input"] for j in home.jobs())


# -- an existing library lands at once: intake streams ------------------------------

TINY = VideoSpec(codec="libx264", width=64, height=64, fps=10, seconds=0.2, audio=None)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> bytes:
    return make_video(tmp_path_factory.mktemp("tiny") / "tiny.mp4", TINY).read_bytes()


def test_a_library_present_at_start_runs_jobs_while_it_is_still_being_registered(home, tiny_clip):
    """1,500 distinct videos already in the inbox: jobs are dispatched before the last file
    is registered (the intake gives each loop turn a bounded bite, so registering 1,500
    files takes many turns, and every turn dispatches), and every file ends up as exactly
    one completed job. Dispatch, not completion, is what the log order can prove: a worker
    still importing its libraries may finish its first job after registration ends."""
    total = 1500
    for i in range(total):
        folder = home.inbox / f"lib{i // 500}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"v{i:05d}.mp4").write_bytes(tiny_clip + b"\nlibrary %d\n" % i)
    proc = home.start()
    wait_until(lambda: home.json("status")["counts"]["completed"] == total, 300,
               f"{total} completed jobs", interval=1.0)
    lines = home.log_text().splitlines()
    created = [n for n, line in enumerate(lines) if line.endswith(": pending")]
    started = [n for n, line in enumerate(lines) if ": running (attempt" in line]
    completed = [n for n, line in enumerate(lines) if line.endswith(": completed")]
    assert len(created) == total and len(started) == total and len(completed) == total
    assert started[0] < created[-1], "no job was dispatched before the whole inbox was registered"
    counts = inputs(home)
    assert len(counts) == total and set(counts.values()) == {1}
    assert home.stop(proc) == 0


class TickingClock:
    """Advances `step` seconds at every read: a turn's time budget becomes a bound on how
    many things it looks at, independent of this machine's speed."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _intake_home(tmp_path, **overrides):
    config = load_settings({"home": tmp_path / "home"}, env={}).with_overrides(**overrides)
    prepare_directories(config, create=True)
    return config


def test_intake_takes_a_scan_in_bounded_bites(tmp_path):
    """In-process, real files and store: the scan thread waits on a bounded feed, the gate
    and the hashers hold a bounded number of files, each step creates a bounded number of
    jobs, the first jobs exist long before the scan ends, and every file is one job."""
    config = _intake_home(tmp_path, settle_seconds=0.0)
    total = 6000
    for i in range(total):
        folder = config.inbox / f"d{i // 1000}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i:05d}.mp4").write_bytes(b"not decoded here %d" % i)
    inbox = Root(config.inbox)
    store = JobStore(config.state, autoflush=False)
    intake = Intake(config, inbox, store, scan_dir=lambda key: None, clock=TickingClock(0.0005))
    selection = Selection(config.video_extensions, config.ignore_patterns)
    scan_done = threading.Event()

    def scanner():
        epoch = intake.feed_epoch
        for key in scan(inbox, selection):
            assert intake.feed(key, epoch)
        scan_done.set()

    thread = threading.Thread(target=scanner, daemon=True)
    thread.start()
    created: list[str] = []
    first_job_while_scanning = None
    most_per_step = most_in_flight = most_fed = 0
    deadline = time.monotonic() + 120
    try:
        while not (scan_done.is_set() and intake.idle):
            assert time.monotonic() < deadline, f"intake stalled at {len(created)} jobs"
            made = [job_id for job_id, new in intake.step() if new]
            if made and first_job_while_scanning is None:
                first_job_while_scanning = not scan_done.is_set()
            created += made
            most_per_step = max(most_per_step, len(made))
            most_in_flight = max(most_in_flight, len(intake.gate) + len(intake.hashing))
            most_fed = max(most_fed, intake._scanned.qsize())
            if not made:
                time.sleep(0.001)  # let the hash threads run; pacing only
            if len(created) % 500 < len(made):
                store.flush()
        store.flush()
        thread.join(timeout=10)
        assert first_job_while_scanning, "the first job waited for the scan to finish"
        assert most_fed <= SCAN_AHEAD and most_in_flight <= PIPELINE
        # 10 ms of budget at 0.5 ms a clock read: two dozen decisions at most.
        assert 0 < most_per_step <= 25, most_per_step
        jobs = [store.get(job_id) for job_id in created]
        assert len(jobs) == total and len({job["input"] for job in jobs}) == total
    finally:
        intake.close()
        store.close()


def test_pause_and_close_end_the_scans_feeding_the_intake(tmp_path):
    config = _intake_home(tmp_path)
    store = JobStore(config.state, autoflush=False)
    intake = Intake(config, Root(config.inbox), store, scan_dir=lambda key: None)
    try:
        epoch = intake.feed_epoch
        for i in range(SCAN_AHEAD):
            assert intake.feed(f"f{i}.mp4", epoch)
        results: list[bool] = []
        blocked = threading.Thread(target=lambda: results.append(intake.feed("one-more.mp4", epoch)))
        blocked.start()  # the feed is full: the scan waits here
        time.sleep(0.3)
        assert blocked.is_alive() and not results
        intake.pause()  # the inbox went away
        blocked.join(timeout=5)
        assert results == [False] and intake.idle
        assert not intake.feed("late.mp4", epoch), "a scan from before the pause fed the intake"
        assert intake.feed("new-scan.mp4", intake.feed_epoch)
        intake.close()
        assert not intake.feed("after-close.mp4", intake.feed_epoch)
    finally:
        intake.close()
        store.close()


# -- the settle gate's promises, under generated histories ---------------------------

class ManualClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


OPS = st.lists(st.tuples(st.sampled_from(["write", "observe", "tick", "poll"]),
                         st.integers(0, 4), st.floats(0.0, 0.7)), max_size=150)


@given(ops=OPS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_settle_gate_is_never_early_and_never_loses_or_repeats_a_file(tmp_path_factory, ops):
    """Any interleaving of appends, hints, clock steps and polls (with or without a limit):
    a file is handed out only after `quiet` seconds without a change the gate could see,
    each observed file exactly once, and every observed file eventually."""
    folder = tmp_path_factory.mktemp("gate")
    clock, quiet = ManualClock(), 1.0
    gate = SettleGate(Root(folder), quiet, trust_ctime=False, clock=clock)
    last_write: dict[str, float] = {}
    for n in range(5):
        (folder / f"f{n}.mp4").write_bytes(b"x")
        last_write[f"f{n}.mp4"] = clock.now
    owed: set[str] = set()  # observed since it was last handed out

    def take(limit):
        for ready in gate.poll(limit=limit):
            assert clock.now - last_write[ready.key] >= quiet, "handed out before it was quiet"
            assert ready.key in owed, f"{ready.key} handed out twice or never observed"
            owed.discard(ready.key)
            assert os.path.samefile(ready.path, folder / ready.key)

    for op, n, value in ops:
        key = f"f{n}.mp4"
        if op == "write":
            with open(folder / key, "ab") as fh:
                fh.write(b"y")  # size grows: a change stat can always see
            last_write[key] = clock.now
        elif op == "observe":
            gate.observe(key)
            owed.add(key)
        elif op == "tick":
            clock.now += value
        else:
            take(n or None)
    for _ in range(200):  # then quiet: everything owed comes out, a few at a time
        if not owed:
            break
        clock.now += gate.interval
        take(2)
    assert not owed, f"lost: {owed}"
    assert len(gate) == 0


def test_settle_gate_drops_stale_schedule_entries(tmp_path):
    """A file hinted over and over (a writer's every chunk) leaves no pile of heap entries."""
    (tmp_path / "busy.mp4").write_bytes(b"x")
    clock = ManualClock()
    gate = SettleGate(Root(tmp_path), 1.0, trust_ctime=False, clock=clock)
    for _ in range(1000):
        with open(tmp_path / "busy.mp4", "ab") as fh:
            fh.write(b"y")
        gate.observe("busy.mp4")
        assert gate.poll() == []
        clock.now += 0.001  # 250 hints per re-check interval
    assert len(gate._due) <= 64 + 1
    clock.now += 2
    assert [r.key for r in gate.poll()] == ["busy.mp4"]


def test_files_there_before_start_are_taken_at_once_unless_open_or_polling(tmp_path):
    """ctime older than the window: no wait (a library present at start). Not for a file
    a writer holds open, and not in polling mode (a file server's clock is not ours)."""
    (tmp_path / "old.mp4").write_bytes(b"x")
    clock = ManualClock()

    def a_minute_later() -> float:
        return time.time() + 60

    def gate(**options) -> SettleGate:
        made = SettleGate(Root(tmp_path), 2.0, clock=clock, wallclock=a_minute_later, **options)
        made.observe("old.mp4")
        return made

    assert [r.key for r in gate().poll()] == ["old.mp4"]
    held, polling = gate(is_open=lambda key: True, open_timeout=30.0), gate(trust_ctime=False)
    assert held.poll() == [] and polling.poll() == []
    clock.now += 2.0
    assert held.poll() == [] and [r.key for r in polling.poll()] == ["old.mp4"]


def test_no_busy_loop_while_the_hashers_are_full(tmp_path, monkeypatch):
    """Big files keep every hasher slot busy while more files are due in the gate: the loop
    is told to wait a little (it would spin at 100 % CPU otherwise), and nothing is lost.
    The hash is held back by fault injection (a hash that waits for the test)."""
    from forgesyte.daemon import intake as intake_module

    release = threading.Event()
    real_hash = intake_module.sha256_file
    monkeypatch.setattr(intake_module, "sha256_file", lambda path: release.wait(30) and real_hash(path))
    config = _intake_home(tmp_path, settle_seconds=0.0)
    total = intake_module.HASH_AHEAD + 40
    for i in range(total):
        (config.inbox / f"big{i:03d}.mp4").write_bytes(b"big %d" % i)
    store = JobStore(config.state, autoflush=False)
    intake = Intake(config, Root(config.inbox), store, scan_dir=lambda key: None)
    try:
        for key in sorted(os.listdir(config.inbox)):
            assert intake.feed(key, intake.feed_epoch)
        wait_until(lambda: intake.step() == [] and len(intake.hashing) == intake_module.HASH_AHEAD,
                   10, "the hashers to fill up")
        assert len(intake.gate) == total - intake_module.HASH_AHEAD  # due, waiting for a slot
        assert intake.wait_hint() > 0
        release.set()
        created: list[str] = []
        wait_until(lambda: created.extend(j for j, new in intake.step() if new) or len(created) == total,
                   30, f"{total} jobs")
        assert intake.idle and intake.wait_hint() is None
    finally:
        release.set()
        intake.close()
        store.close()


# -- Root.stat_key (the gate's stat) against path_for + stat --------------------------

KINDS = st.sampled_from(["file", "dir", "fifo", "out-file", "out-dir", "dangling", "in-a", "in-b", "in-c"])


def _outcome(call, key):
    """What the gate makes of a lookup: drop the candidate, look again later, or a file."""
    try:
        st_ = call(key)
    except (FileNotFoundError, NotADirectoryError, UnsafeKey):
        return "drop"
    except OSError:
        return "retry"
    return (st_.st_dev, st_.st_ino, st_.st_size)


@given(kinds=st.lists(KINDS, min_size=3, max_size=3))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_stat_key_agrees_with_path_for_on_any_tree_of_links(tmp_path_factory, kinds):
    """The gate's one-open stat must refuse exactly what path_for refuses (links out of the
    inbox, through files or folders, loops, dangling) and stat the same file otherwise."""
    top = tmp_path_factory.mktemp("links")
    inbox, outside = top / "inbox", top / "outside"
    inbox.mkdir()
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.mp4").write_bytes(b"secret")
    (outside / "dir" / "f").write_bytes(b"outside f")
    for name, kind in zip("abc", kinds):
        path = inbox / name
        if kind == "file":
            path.write_bytes(b"inside " + name.encode())
        elif kind == "dir":
            path.mkdir()
            (path / "f").write_bytes(b"f in " + name.encode())
            os.symlink("../../outside/secret.mp4", path / "g")
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "out-file":
            os.symlink(outside / "secret.mp4", path)
        elif kind == "out-dir":
            os.symlink("../outside/dir", path)
        elif kind == "dangling":
            os.symlink("nowhere", path)
        else:  # in-a / in-b / in-c: a relative link to a sibling (loops included)
            os.symlink(kind[-1], path)
    root = Root(inbox)
    for key in [n + tail for n in "abc" for tail in ("", "/f", "/g")]:
        expected = _outcome(lambda k: os.stat(root.path_for(k)), key)
        assert _outcome(lambda k: root.stat_key(k)[1], key) == expected, (key, kinds)
        assert _outcome(lambda k: root.stat_key(k, root.real_path())[1], key) == expected, (key, kinds)
