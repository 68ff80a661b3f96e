"""The commands scripts and operators reach for, on a real daemon: wait, cancel, rerun,
retry --failed, prune --dry-run, why (events: tests/test_cli_events.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import register_test_plugin, wait_until
from tests.test_cli_output import validator

# A plugin that holds its job until the test releases it: a job that is "running" for
# exactly as long as a test needs, with no timing guesses.
GATE = '''
import os, time

class Gate:
    name = "gate"
    version = "1"
    description = "waits for a release file (tests)"

    def run(self, video, ctx):
        folder = os.environ["FORGESYTE_TEST_GATE"]
        with open(os.path.join(folder, "started-" + ctx.job_id), "w") as fh:
            fh.write(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(folder, "release")) and time.monotonic() < deadline:
            ctx.progress(0.5)
            time.sleep(0.05)
        return {"released": True}
'''


@pytest.fixture
def gate(home, tmp_path) -> Path:
    """Chain metadata,gate; returns the folder where `started-<job>` files appear and
    where creating `release` lets every gated job finish."""
    folder = tmp_path / "gate-plugin"
    folder.mkdir()
    (folder / "gate_plugin.py").write_text(GATE)
    register_test_plugin(home, folder, "gate", "gate_plugin:Gate")
    signals = tmp_path / "gate"
    signals.mkdir()
    home.extra_env["FORGESYTE_TEST_GATE"] = str(signals)
    home.config.write_text(home.config.read_text() + 'plugins = ["metadata", "gate"]\n')
    return signals


def started(gate: Path) -> list[str]:
    return sorted(p.name[len("started-"):] for p in gate.glob("started-*"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def one_sentence(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# -- wait ----------------------------------------------------------------------------

def test_wait_for_a_file_dropped_a_moment_ago(home, videos):
    home.config.write_text(home.config.read_text().replace("settle_seconds = 0.3", "settle_seconds = 1.5"))
    proc = home.start()
    home.drop(videos["clip.mp4"], "cam1/a.mp4")
    # Still inside its settle window: not a job yet, and `wait` waits for the job to come.
    assert home.cli("show", "cam1/a.mp4").returncode == 1
    done = home.cli("wait", "cam1/a.mp4", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    first = home.json("show", "cam1/a.mp4")
    assert done.stdout.split() == ["completed", first["id"], "cam1/a.mp4"]

    # Same path, new content, after its job finished: wait means the new job, not the old one.
    home.drop(videos["clip.webm"], "cam1/a.mp4")
    again = home.cli("wait", str(home.inbox / "cam1" / "a.mp4"), "--timeout", "60")
    assert again.returncode == 0, again.stderr
    second = home.json("show", "cam1/a.mp4")
    assert second["id"] != first["id"] and again.stdout.split()[1] == second["id"]
    # Touched (same content, new mtime): no new job will come; wait ends on the same job.
    os.utime(home.inbox / "cam1" / "a.mp4")
    touched = home.cli("wait", "cam1/a.mp4", "--timeout", "60")
    assert touched.returncode == 0 and touched.stdout.split()[1] == second["id"], touched.stderr

    # A failed job, a finished one and an unknown name: 1, one line per job, a sentence each.
    (home.inbox / "junk.mp4").write_bytes(b"not a video" * 100)
    mixed = home.cli("wait", "junk.mp4", first["id"], "nope.mp4", "--timeout", "60")
    assert mixed.returncode == 1
    lines = mixed.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("completed") and first["id"] in lines[0]
    assert lines[1].startswith("failed") and "junk.mp4: Plugin 'metadata' failed" in lines[1]
    assert one_sentence(mixed) == f"There is no nope.mp4 in the inbox {home.inbox}."

    # Never a job: refused at once with the reason, not waited for until the timeout.
    (home.inbox / ".partial.mp4").write_bytes(b"x")
    hidden = home.cli("wait", ".partial.mp4")
    assert hidden.returncode == 1 and "matches the ignore pattern '.*'" in one_sentence(hidden)

    document = json.loads(home.cli("wait", "--json", "junk.mp4", "cam1/a.mp4").stdout)
    validator("wait").validate(document)
    assert [j["status"] for j in document["jobs"]] == ["failed", "completed"]
    assert document["unknown"] == [] and document["timed_out"] == []
    assert home.stop(proc) == 0


# -- cancel, rerun, retry --failed ----------------------------------------------------------

def test_cancel_pending_and_running_then_rerun_and_retry_failed(home, videos, gate):
    home.config.write_text(home.config.read_text().replace("workers = 2", "workers = 1"))
    proc = home.start()
    home.drop(videos["clip.mp4"], "a.mp4")
    wait_until(lambda: started(gate), 30, "the gated job to start")
    running = home.json("show", "a.mp4")
    assert running["status"] == "running"
    timed = home.cli("wait", "a.mp4", "--timeout", "0.3", "--json")
    assert timed.returncode == 124 and one_sentence(timed) == "Timed out after 0.3 s waiting for a.mp4."
    assert json.loads(timed.stdout) == {"jobs": [], "unknown": [], "timed_out": ["a.mp4"]}
    worker = int((gate / f"started-{running['id']}").read_text())
    home.drop(videos["clip.webm"], "b.webm")  # waits behind a.mp4: the only worker is busy
    pending = home.wait_status("b.webm", ("pending",))

    out = home.cli("cancel", "b.webm")
    assert out.returncode == 0 and out.stdout.strip() == f"Job {pending['id']} (b.webm) is cancelled."
    b = home.json("show", "b.webm")
    assert (b["status"], b["error"]) == ("failed", "Cancelled.")

    out = home.cli("cancel", "--json", str(home.inbox / "a.mp4"))  # an absolute path works as JOB
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    validator("job").validate(record)
    assert (record["id"], record["status"], record["error"]) == (running["id"], "failed", "Cancelled.")
    wait_until(lambda: not alive(worker), 10, "the cancelled job's worker process to be gone")

    again = home.cli("cancel", "a.mp4")
    assert again.returncode == 1
    assert one_sentence(again) == (f"Job {running['id']} is already failed; only a pending or running "
                                   "job can be cancelled.")

    # rerun: a new job for the same input and content, not deduplicated into the old one.
    (gate / "release").touch()
    rerun = home.cli("rerun", "--json", "b.webm")
    assert rerun.returncode == 0, rerun.stderr
    new = json.loads(rerun.stdout)
    validator("job").validate(new)
    assert new["id"] != b["id"] and new["input"] == "b.webm" and new["duplicate_of"] is None
    assert new["sha256"] == b["sha256"] and new["plugins"] == ["metadata", "gate"]
    done = home.wait_status(new["id"])
    assert done["status"] == "completed" and done["duplicate_of"] is None
    not_finished = home.cli("rerun", "nope")
    assert not_finished.returncode == 1 and "nope" in one_sentence(not_finished)

    # retry --failed: every failed job (a.mp4 and the old b.webm job) is pending again.
    out = home.cli("retry", "--failed")
    assert out.returncode == 0 and out.stdout.strip() == "2 failed jobs are pending again."
    assert home.wait_status(running["id"])["status"] == "completed"
    assert home.wait_status(b["id"])["status"] == "completed"
    assert home.json("retry", "--failed") == {"retried": 0, "jobs": []}
    assert home.stop(proc) == 0


def test_cancel_and_retry_failed_without_a_daemon(home):
    home.inbox.mkdir(parents=True)
    for name in ("x.mp4", "y.mp4"):
        (home.inbox / name).write_text("junk")
    assert home.start("--once", wait_ready=False).wait(timeout=60) == 1
    out = home.cli("retry", "--failed", "--json")
    document = json.loads(out.stdout)
    validator("retry-failed").validate(document)
    assert document["retried"] == 2 and home.json("status")["counts"]["pending"] == 2
    out = home.cli("cancel", "x.mp4")
    assert out.returncode == 0 and out.stdout.strip().endswith("(x.mp4) is cancelled.")
    cancelled = home.json("show", "x.mp4")
    assert cancelled["error"] == "Cancelled."
    # Like every finished job it has a results document carrying its record (the ground truth).
    document = json.loads((home.output / cancelled["output"]).read_text())
    assert document["job"]["id"] == cancelled["id"] and document["job"]["error"] == "Cancelled."
    retried = home.cli("retry", "x.mp4", "--json")  # no daemon: the CLI writes the store itself
    assert retried.returncode == 0, retried.stderr
    record = json.loads(retried.stdout)
    validator("job").validate(record)
    assert (record["id"], record["status"], record["error"]) == (cancelled["id"], "pending", None)
    neither = home.cli("retry")
    assert neither.returncode == 1 and one_sentence(neither) == "Give either JOB or --failed (not both)."
    not_done = home.cli("rerun", "y.mp4")
    assert not_done.returncode == 1 and "pending, not finished" in one_sentence(not_done)


# -- prune --dry-run --------------------------------------------------------------------------

def test_prune_dry_run_removes_nothing(home, videos):
    home.drop(videos["clip.mp4"], "a.mp4")
    (home.inbox / "b.mp4").write_text("junk")
    assert home.start("--once", wait_ready=False).wait(timeout=60) == 1
    jobs = home.jobs()
    out = home.cli("prune", "--older-than", "0.001s", "--outputs", "--dry-run")
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "Would prune 2 job records and 2 result folders; nothing was removed (--dry-run)."
    assert sorted(line.split()[2] for line in lines[:-1]) == sorted(j["id"] for j in jobs)
    document = json.loads(home.cli("prune", "--older-than", "0.001s", "--dry-run", "--json").stdout)
    validator("prune").validate(document)
    assert document["dry_run"] and document["removed"] == 2 and len(document["jobs"]) == 2
    assert home.json("status")["total"] == 2
    assert all((home.output / j["output"]).exists() for j in jobs)
    assert home.json("prune", "--older-than", "1h", "--dry-run")["removed"] == 0
    real = json.loads(home.cli("prune", "--older-than", "0.001s", "--json").stdout)
    validator("prune").validate(real)
    assert real == {"dry_run": False, "removed": 2, "folders": 0} and home.json("status")["total"] == 0


def test_prune_dry_run_against_a_running_daemon_removes_nothing(home, videos):
    """With the daemon holding the state, --dry-run answers from a snapshot, exit 0, and the
    daemon's store and the result folders stay as they were; `retry JOB --json` (through the
    daemon) is a job record like `show --json`."""
    proc = home.start()
    home.drop(videos["clip.mp4"], "a.mp4")
    (home.inbox / "b.mp4").write_text("junk")
    assert home.wait_status("a.mp4")["status"] == "completed"
    assert home.wait_status("b.mp4")["status"] == "failed"
    jobs = home.jobs()
    out = home.cli("prune", "--older-than", "0.001s", "--outputs", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "Would prune 2 job records and 2 result folders; nothing was removed (--dry-run)."
    assert sorted(line.split()[2] for line in lines[:-1]) == sorted(j["id"] for j in jobs)
    document = json.loads(home.cli("prune", "--older-than", "0.001s", "--outputs", "--dry-run", "--json").stdout)
    validator("prune").validate(document)
    assert (document["dry_run"], document["removed"], document["folders"]) == (True, 2, 2)
    assert proc.poll() is None and home.json("status")["daemon"]["running"]
    assert home.json("status")["total"] == 2 and home.jobs() == jobs
    assert all((home.output / j["output"]).exists() for j in jobs)

    retried = home.cli("retry", "b.mp4", "--json")
    assert retried.returncode == 0, retried.stderr
    record = json.loads(retried.stdout)
    validator("job").validate(record)
    assert record["input"] == "b.mp4" and record["status"] == "pending" and record["error"] is None
    assert home.wait_status(record["id"])["status"] == "failed"

    real = json.loads(home.cli("prune", "--older-than", "0.001s", "--json").stdout)  # the daemon prunes
    assert real == {"dry_run": False, "removed": 2, "folders": 0} and home.json("status")["total"] == 0
    assert home.stop(proc) == 0


# -- why ------------------------------------------------------------------------------------

def _drop_file_read_override() -> None:
    """In the child, before exec: root loses CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    (PR_CAPBSET_DROP), so file modes apply to it as to anyone: a 0000 file is unreadable."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(97)


def _why(home, *args, cwd=None, no_override=False) -> dict:
    proc = subprocess.run([sys.executable, "-m", "forgesyte", "why", "--json", *args], env=home.env(),
                          capture_output=True, text=True, timeout=60, cwd=cwd,
                          preexec_fn=_drop_file_read_override if no_override else None)
    if proc.returncode == 97:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here (no CAP_SETPCAP), so root reads any file")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    validator("why").validate(answer)
    return answer


def test_why_without_a_daemon_decides_from_the_file(home, videos, tmp_path):
    home.inbox.mkdir(parents=True)
    (home.inbox / ".hidden.mp4").write_bytes(b"x")
    (home.inbox / "notes.txt").write_bytes(b"x")
    (home.inbox / "empty.mp4").touch()
    (home.inbox / "folder.mp4").mkdir()
    (home.inbox / "out.mp4").symlink_to(videos["clip.mp4"])  # outside the inbox
    (home.inbox / ".sync").mkdir()
    (home.inbox / ".sync" / "c.mp4").write_bytes(b"x")
    home.drop(videos["clip.mp4"], "cam1/ready.mp4")
    os.utime(home.inbox / "cam1" / "ready.mp4", (1, 1))
    fresh = home.drop(videos["clip.mp4"], "fresh.mp4")

    from forgesyte.config import load_settings
    from forgesyte.daemon.why import explain
    from forgesyte.cli import EmptyStore

    settings = load_settings({"home": home.root, "config": home.config}, {})

    def verdict(key):  # the same function the command calls, in-process: one CLI start per form below
        answer = explain(settings, EmptyStore(), key)
        validator("why").validate(answer)
        return answer

    assert verdict(".hidden.mp4")["pattern"] == ".*"
    assert verdict(".sync/c.mp4")["reason"] == ".sync/c.mp4 is ignored: the folder '.sync' matches the ignore pattern '.*'."
    assert verdict("notes.txt")["verdict"] == "not-video"
    assert verdict("empty.mp4")["reason"] == "empty.mp4 is empty; it becomes a job once it has content."
    assert verdict("folder.mp4")["verdict"] == "not-file"
    out = verdict("out.mp4")
    assert out["verdict"] == "outside" and str(videos["clip.mp4"]) in out["reason"]
    assert verdict("missing.mp4")["verdict"] == "missing"
    assert verdict("fresh.mp4")["verdict"] in ("writing", "waiting")  # ctime is that of the copy
    # Complete once unchanged for the settle window (0.3 s here; its ctime is the copy's).
    ready = wait_until(lambda: (a := verdict("cam1/ready.mp4"))["verdict"] == "waiting" and a, 10,
                       "a settled file to be explained as waiting for a daemon")
    assert "no daemon holds this state" in ready["reason"]
    # Held open by a writer (this test process): named, with its pid.
    with open(fresh, "ab") as writer:
        writer.write(b"more")
        writer.flush()
        held = verdict("fresh.mp4")
        assert held["verdict"] == "writing" and f"(pid {os.getpid()})" in held["reason"]
    # The forms a person types, through the command: absolute, relative to the current
    # directory inside the inbox, and a path outside it.
    assert _why(home, str(home.inbox / "notes.txt"))["path"] == "notes.txt"
    assert _why(home, "./ready.mp4", cwd=home.inbox / "cam1")["path"] == "cam1/ready.mp4"
    elsewhere = _why(home, str(tmp_path))
    assert elsewhere["verdict"] == "invalid" and elsewhere["reason"] == \
        f"{tmp_path} is not inside the inbox {home.inbox}, so it cannot become a job."

    assert home.start("--once", wait_ready=False).wait(timeout=60) == 0
    job = home.json("show", "cam1/ready.mp4")
    assert home.cli("why", "cam1/ready.mp4").stdout.strip() == f"cam1/ready.mp4 is job {job['id']} (completed)."


def test_why_unreadable_file(home, videos):
    """An input its reader cannot open. Root reads any file whatever its mode, so as root
    (CI) the command runs without the capabilities that let it."""
    home.inbox.mkdir(parents=True)
    locked = home.drop(videos["clip.mp4"], "locked.mp4")
    os.chmod(locked, 0o000)
    answer = _why(home, "locked.mp4", no_override=os.geteuid() == 0)
    assert answer["verdict"] == "unreadable"
    assert answer["reason"] == "locked.mp4 cannot be read by this user (Permission denied)."


def test_why_asks_the_running_daemon(home, videos):
    home.config.write_text(home.config.read_text().replace("settle_seconds = 0.3", "settle_seconds = 30"))
    proc = home.start()
    path = home.inbox / "slow.mp4"
    with open(path, "wb") as writer:  # a copy in progress: open, partly written
        writer.write(videos["clip.mp4"].read_bytes()[:5000])
        writer.flush()
        answer = wait_until(lambda: (a := _why(home, "slow.mp4"))["verdict"] == "writing" and a, 15,
                            "the daemon to see the open file")
        assert "held open by" in answer["reason"] and f"(pid {os.getpid()})" in answer["reason"]
    answer = wait_until(lambda: (a := _why(home, "slow.mp4"))["reason"].find("held open") < 0 and a, 15,
                        "the close to reach the daemon")
    assert answer["verdict"] == "writing" and "taken once unchanged for 30 s" in answer["reason"]
    assert home.stop(proc) == 0


# -- nothing is created under a mistyped --home --------------------------------------------

MISTYPED = [
    ("status",), ("list",), ("show", "x"), ("results", "x"), ("retry", "x"), ("retry", "--failed"),
    ("cancel", "x"), ("rerun", "x"), ("prune", "--older-than", "1d"),
    ("prune", "--older-than", "1d", "--dry-run"), ("why", "a.mp4"), ("events",),
    ("wait", "x", "--timeout", "0"), ("watch", "--count", "1"), ("doctor",),
]


def test_a_mistyped_home_stays_empty(home, tmp_path):
    """Every command but `run`, under a --home that does not exist, creates nothing there
    (in-process through click's runner: the question is what the code touches)."""
    from click.testing import CliRunner

    from forgesyte.cli import cli

    typo = tmp_path / "no" / "such" / "home"
    runner = CliRunner()
    for args in MISTYPED:
        result = runner.invoke(cli, ["--home", str(typo), *args], env=home.env(), prog_name="forgesyte")
        assert "Traceback" not in result.output
        assert not (tmp_path / "no").exists(), f"{args} created {list((tmp_path / 'no').rglob('*'))}"
        if args[0] in ("retry", "cancel", "rerun") and args[1] == "x":
            assert result.exit_code == 1
            assert f"there is no ForgeSyte state folder at {typo}/state" in result.output
