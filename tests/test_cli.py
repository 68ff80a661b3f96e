"""CLI behaviour for people and scripts: exit codes, one-sentence errors, --json documents."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from forgesyte.cli import cli


def test_empty_home_status_json(home):
    status = home.json("status")
    assert status == {
        "counts": {"pending": 0, "running": 0, "completed": 0, "failed": 0},
        "total": 0,
        "interrupted": 0,
        "daemon": {"running": False, "pid": None, "since": None},
        "inbox": str(home.inbox),
        "output": str(home.output),
    }


@pytest.mark.parametrize("args", [
    ("show", "nope"), ("results", "nope"), ("retry", "nope"), ("show", "nope", "--json"),
])
def test_unknown_job_is_exit_1_and_one_sentence(home, args):
    proc = home.cli(*args)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0] and "Traceback" not in proc.stderr
    assert not home.root.joinpath("state").exists()  # nothing created for a command that reads


@pytest.mark.parametrize("args", [
    ("list", "--limit", "zero"), ("list", "--status", "weird"), ("show",), ("frobnicate",),
    ("status", "--bogus"),
])
def test_bad_arguments_are_exit_1_and_one_sentence(home, args):
    proc = home.cli(*args)
    assert proc.returncode == 1, proc
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_run_arguments_are_configuration_errors(home):
    proc = home.cli("run", "--workers", "0")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_list_show_results_after_a_run(home, videos):
    home.drop(videos["clip.mp4"], "a.mp4")
    home.drop(videos["clip.webm"], "b/b.webm")
    (home.inbox / "c.mkv").write_text("junk")
    assert home.start("--once").wait(timeout=60) == 1
    jobs = home.json("list")
    assert len(jobs) == 3 and jobs == sorted(jobs, key=lambda j: j["id"], reverse=True)
    assert [j["status"] for j in home.json("list", "--status", "failed")] == ["failed"]
    assert len(home.json("list", "--limit", "2")) == 2
    assert home.json("show", jobs[0]["id"])["input"] == jobs[0]["input"]
    text = home.cli("list", check=True).stdout
    assert "a.mp4" in text and "b/b.webm" in text and "STATUS" in text
    shown = home.cli("show", "a.mp4", check=True).stdout
    assert "status" in shown and "completed" in shown
    section = json.loads(home.cli("results", "a.mp4", "--plugin", "metadata", check=True).stdout)
    assert section["video"]["codec"] == "h264"
    missing = home.cli("results", "a.mp4", "--plugin", "nosuch")
    assert missing.returncode == 1 and "nosuch" in missing.stderr
    failed = home.cli("results", "c.mkv")
    assert failed.returncode == 1 and "failed" in failed.stderr


def test_retry_without_daemon_applies_directly(home):
    home.inbox.mkdir(parents=True)
    (home.inbox / "x.mp4").write_text("junk")
    assert home.start("--once").wait(timeout=60) == 1
    proc = home.cli("retry", "x.mp4")
    assert proc.returncode == 0 and "pending again" in proc.stdout
    assert home.json("show", "x.mp4")["status"] == "pending"
    second = home.cli("retry", "x.mp4")
    assert second.returncode == 1 and "not failed" in second.stderr


def test_results_missing_file_is_exit_1(home, videos):
    home.drop(videos["clip.mp4"], "a.mp4")
    assert home.start("--once").wait(timeout=60) == 0
    job = home.json("show", "a.mp4")
    (home.output / job["output"]).unlink()
    proc = home.cli("results", "a.mp4")
    assert proc.returncode == 1 and "missing" in proc.stderr


def test_plugins_json_lists_metadata(home):
    plugins = home.json("plugins")
    meta = next(p for p in plugins if p["name"] == "metadata")
    assert meta["error"] is None and meta["version"] and meta["description"]


def test_cli_runner_help_and_version():
    runner = CliRunner()
    assert "status" in runner.invoke(cli, ["--help"]).output
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"], prog_name="forgesyte")
    assert info.value.code == 0


def test_prune_with_and_without_daemon(home, videos):
    home.drop(videos["clip.mp4"], "a.mp4")
    (home.inbox / "b.mp4").write_text("junk")
    assert home.start("--once").wait(timeout=60) == 1
    a = home.json("show", "a.mp4")
    assert home.cli("prune", "--older-than", "1h").stdout.strip() == "Pruned 0 job records."
    bad = home.cli("prune", "--older-than", "soon")
    assert bad.returncode == 1 and "not a duration" in bad.stderr
    proc = home.start()  # with a daemon, the request goes through it
    out = home.cli("prune", "--older-than", "0.001s", "--outputs")
    assert out.returncode == 0 and out.stdout.strip() == "Pruned 2 job records and 2 result folders."
    assert home.json("status")["total"] == 0
    assert not (home.output / a["output"]).exists()
    # The files are still in the inbox: pruning must not make them new jobs.
    home.drop(videos["clip.webm"], "c.webm")
    home.wait_status("c.webm")
    assert [j["input"] for j in home.jobs()] == ["c.webm"]
    assert home.stop(proc) == 0
