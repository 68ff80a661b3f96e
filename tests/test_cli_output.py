"""CLI output for scripts (JSON Schemas) and for people (terminal-aware text)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schema"


def validator(name: str) -> jsonschema.Draft202012Validator:
    resources = []
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
        resources.append((path.name, Resource.from_contents(schema)))
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, registry=Registry().with_resources(resources))


def in_pty(home, *args: str, env_extra: dict | None = None) -> str:
    """Run the CLI with a real terminal as stdout; returns what it printed."""
    master, slave = pty.openpty()
    env = home.env()
    env.update(env_extra or {})
    proc = subprocess.Popen([sys.executable, "-m", "forgesyte", *args], env=env, stdout=slave,
                            stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(master)
    return b"".join(chunks).decode()


@pytest.fixture
def ran(home, videos):
    home.drop(videos["clip.mp4"], "cam1/a.mp4")
    home.drop(videos["clip.webm"], "cam2/a-very-long-folder-name/with/many/levels/b.webm")
    (home.inbox / "bad.mkv").write_text("junk")
    home.config.write_text(home.config.read_text() + 'plugins = ["metadata", "scenes"]\n')
    assert home.start("--once").wait(timeout=120) == 1
    return home


def test_every_json_output_matches_its_schema(ran):
    home = ran
    validator("status").validate(home.json("status"))
    jobs = home.json("list")
    validator("jobs").validate(jobs)
    for job in jobs:
        validator("job").validate(home.json("show", job["id"]))
    validator("plugins").validate(home.json("plugins"))
    document = json.loads(home.cli("results", "cam1/a.mp4", check=True).stdout)
    validator("results").validate(document)
    assert set(document["plugins"]) == {"metadata", "scenes"}


def test_schemas_reject_what_the_contract_forbids():
    job = {"id": "x", "status": "done", "input": "/abs/path.mp4", "output": None, "plugins": [],
           "attempts": 0, "progress": 0, "error": None, "size": 1, "sha256": "0" * 64,
           "duplicate_of": None, "created_at": "2026-11-25T03:17:27.426Z", "started_at": None,
           "finished_at": None}
    errors = list(validator("job").iter_errors(job))
    assert {e.path[0] for e in errors} == {"status", "input"}


def test_the_readme_lists_every_schema():
    """The README's "For scripts" paragraph names each schema in docs/schema/ (fsck was missing)."""
    readme = (SCHEMAS.parent.parent / "README.md").read_text()
    start = readme.index("described by a JSON Schema in")
    listed = readme[start:readme.index(");", start)]
    names = {path.name.removesuffix(".schema.json") for path in SCHEMAS.glob("*.schema.json")}
    assert {name for name in names if f"`{name}`" not in listed} == set()


def test_colour_only_on_a_terminal_and_never_with_no_color(ran):
    home = ran
    on_tty = in_pty(home, "list")
    assert "\x1b[" in on_tty and "completed" in on_tty
    assert "\x1b[" not in in_pty(home, "list", env_extra={"NO_COLOR": "1"})
    assert "\x1b[" not in home.cli("list").stdout  # piped


def test_results_pretty_on_a_terminal_compact_when_piped(ran):
    home = ran
    piped = home.cli("results", "cam1/a.mp4").stdout
    assert piped.count("\n") == 1 and json.loads(piped)["input"] == "cam1/a.mp4"
    pretty = in_pty(home, "results", "cam1/a.mp4")
    assert pretty.count("\n") > 10 and json.loads(pretty.replace("\r\n", "\n"))["input"] == "cam1/a.mp4"


def test_list_fits_the_terminal(ran):
    home = ran
    out = in_pty(home, "list", env_extra={"COLUMNS": "70", "NO_COLOR": "1"})
    lines = [line for line in out.replace("\r\n", "\n").splitlines() if line]
    assert lines[0].split() == ["ID", "STATUS", "PROG", "AGE", "TIME", "INPUT"]
    assert all(len(line) <= 70 for line in lines), lines
    assert any("…" in line and line.endswith("b.webm") for line in lines)
    # Piped, nothing is cut: scripts get the whole input key.
    assert "cam2/a-very-long-folder-name/with/many/levels/b.webm" in home.cli("list").stdout


def test_show_status_watch_for_people(ran):
    home = ran
    shown = home.cli("show", "cam1/a.mp4", check=True).stdout
    assert "status" in shown and "completed" in shown and "[####################] 100%" in shown
    assert "metadata, scenes" in shown and "ago)" in shown
    status = home.cli("status", check=True).stdout
    assert "not running" in status and "completed 2" in status and "failed 1" in status
    watched = home.cli("watch", "--count", "2", "--interval", "0.1", check=True).stdout
    assert watched.count("nothing running") == 2 and "RECENT" in watched


def test_doctor_says_what_to_fix(home, tmp_path):
    fresh = home.cli("doctor")
    assert fresh.returncode == 0, fresh.stdout  # missing directories are made by run: a warning
    assert "does not exist yet" in fresh.stdout
    assert home.start("--once", wait_ready=False).wait(timeout=60) == 0
    ok = home.cli("doctor")
    assert ok.returncode == 0, ok.stdout
    assert "[ok] plugins load" in ok.stdout and "no daemon holds this state folder" in ok.stdout
    assert "fix: Start it" in ok.stdout
    (tmp_path / "a-file").write_text("x")
    broken = home.cli("--output", str(tmp_path / "a-file"), "doctor")
    assert broken.returncode == 1
    assert "[FAIL]" in broken.stdout and "exists but is not a directory" in broken.stdout


def test_shell_completion_script(home):
    env = home.env()
    env["_FORGESYTE_COMPLETE"] = "bash_source"
    out = subprocess.run([sys.executable, "-m", "forgesyte"], env=env, capture_output=True, text=True)
    assert "complete" in out.stdout and "_forgesyte_completion" in out.stdout
