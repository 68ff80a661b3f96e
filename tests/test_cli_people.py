"""The CLI as people use it: truthful status, the running plugin, JOB as typed, escaped
names, completion, Ctrl-C, and `events`."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from forgesyte.storage.events import EventLog
from forgesyte.storage.ids import utc_in
from forgesyte.text import display
from forgesyte.views import size, span
from tests.conftest import wait_until
from tests.test_cli_commands import alive, gate, one_sentence, started  # noqa: F401 (gate: a fixture)
from tests.test_cli_output import validator


def run_in(home, cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forgesyte", *args], env=home.env(), cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


# -- truthful status -------------------------------------------------------------------------

def test_running_plugin_then_interrupted_when_the_daemon_is_gone(home, videos, gate):  # noqa: F811
    proc = home.start()
    home.drop(videos["clip.mp4"], "a.mp4")
    wait_until(lambda: started(gate), 30, "the gated job to start")
    job = wait_until(lambda: (j := home.json("show", "a.mp4")).get("plugin") == "gate" and j, 15,
                     "the running plugin to reach the record")
    assert job["status"] == "running" and job["interrupted"] is False
    row = next(line for line in home.cli("list").stdout.splitlines() if "a.mp4" in line)
    assert row.split()[1] == "running" and " gate " in row
    assert "gate" in home.cli("watch", "--count", "1").stdout
    shown = home.cli("show", "a.mp4").stdout
    assert "running for" in shown and "took" not in shown and "running plugin  gate" in shown

    os.killpg(proc.pid, signal.SIGKILL)  # the daemon dies; its worker hosts follow it
    proc.wait(timeout=10)
    status = home.json("status")
    validator("status").validate(status)
    assert status["counts"]["running"] == 1 and status["interrupted"] == 1
    assert "interrupted 1" in home.cli("status").stdout
    record = home.json("show", "a.mp4")
    validator("job").validate(record)
    assert record["status"] == "running" and record["interrupted"] is True
    shown = home.cli("show", "a.mp4").stdout
    assert "interrupted (its daemon stopped while it ran" in shown and "running for" not in shown
    row = next(line for line in home.cli("list").stdout.splitlines() if "a.mp4" in line)
    assert row.split()[1:3] == ["interrupted", "0%"] or row.split()[1] == "interrupted"
    assert row.split()[4] == "-"  # no ticking clock for a job nobody runs
    assert "INTERRUPTED" in home.cli("watch", "--count", "1").stdout

    (gate / "release").touch()
    proc = home.start()
    done = home.wait_status("a.mp4")
    assert done["status"] == "completed"
    shown = home.cli("show", "a.mp4").stdout
    assert "took" in shown and "running for" not in shown and "running plugin" not in shown
    assert home.stop(proc) == 0


# -- JOB as people type it ------------------------------------------------------------------

def test_job_as_a_path_and_ambiguous_prefixes(home, videos, tmp_path):
    home.drop(videos["clip.mp4"], "cam1/a.mp4")
    home.drop(videos["clip.webm"], "cam1/b.webm")
    assert home.start("--once", wait_ready=False).wait(timeout=60) == 0
    a = home.json("show", "cam1/a.mp4")
    assert home.json("show", str(home.inbox / "cam1" / "a.mp4"))["id"] == a["id"]
    for ref in ("a.mp4", "./a.mp4", "../cam1/a.mp4"):
        out = run_in(home, home.inbox / "cam1", "show", "--json", ref)
        assert out.returncode == 0 and json.loads(out.stdout)["id"] == a["id"], (ref, out.stderr)
    elsewhere = run_in(home, tmp_path, "show", "./a.mp4")
    assert elsewhere.returncode == 1

    b = home.json("show", "cam1/b.webm")
    common = os.path.commonprefix([a["id"], b["id"]])
    assert common, "two jobs of one run share their time prefix"
    ambiguous = home.cli("show", common)
    assert ambiguous.returncode == 1
    sentence = one_sentence(ambiguous)
    assert sentence.startswith(f"'{common}' matches several jobs: ") and sentence.endswith("give more of the id.")
    assert f"{a['id']} (cam1/a.mp4)" in sentence and f"{b['id']} (cam1/b.webm)" in sentence

    home.drop(videos["clip.mp4"], "new.mp4")
    hint = one_sentence(home.cli("show", "new.mp4"))
    assert hint.endswith("new.mp4 is in the inbox but is not a job (yet); `forgesyte why` says why.")


def test_list_says_when_it_cut_and_shows_sizes_and_durations(home, videos):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        home.drop(videos["clip.mp4"] if name == "a.mp4" else videos["clip.webm"], name)
    assert home.start("--once", wait_ready=False).wait(timeout=60) == 0
    cut = home.cli("list", "--limit", "2")
    assert len(cut.stdout.strip().splitlines()) == 3  # header and two rows
    assert cut.stderr.strip() == "Showing the newest 2 of 3 jobs; use --limit to see more."
    assert home.cli("list", "--limit", "3").stderr == ""
    assert home.cli("list", "--status", "completed", "--limit", "1").stderr.strip() == \
        "Showing the newest 1 of 3 completed jobs; use --limit to see more."
    assert len(json.loads(home.cli("list", "--limit", "2", "--json").stdout)) == 2
    job = home.json("show", "a.mp4")
    assert f"{size(job['size'])} ({job['size']:,} bytes)" in home.cli("show", "a.mp4").stdout


def test_human_sizes_and_durations():
    assert [size(n) for n in (0, 1023, 1536, 5 * 1024 ** 3)] == ["0 B", "1023 B", "1.5 KiB", "5.0 GiB"]
    assert [span(s) for s in (4.25, 42, 65, 3725, 90061)] == ["4.2s", "42s", "1m 05s", "1h 02m", "1d 01h"]


# -- names people see ---------------------------------------------------------------------------

EVIL = "evil\x1b]0;pwned\x07\nline.mp4"


def test_names_are_escaped_for_people_and_exact_in_json(home):
    home.inbox.mkdir(parents=True)
    (home.inbox / EVIL).write_bytes(b"junk, not a video")
    assert home.start("--once", wait_ready=False).wait(timeout=60) == 1
    [job] = home.jobs()
    assert job["input"] == EVIL  # JSON: lossless
    outputs = {
        "list": home.cli("list"), "show": home.cli("show", job["id"]),
        "wait": home.cli("wait", job["id"]), "why": home.cli("why", EVIL),
        "events": home.cli("events"), "retry": home.cli("retry", job["id"]),
        "watch": home.cli("watch", "--count", "1"), "cancel": home.cli("cancel", job["id"]),
    }
    for name, proc in outputs.items():
        text = proc.stdout + proc.stderr
        assert "\x1b" not in text and "\x07" not in text, (name, text)
        assert display(EVIL) in text, (name, text)
    assert len(outputs["list"].stdout.strip().splitlines()) == 2
    assert len(outputs["wait"].stdout.strip().splitlines()) == 1


# -- shell completion -----------------------------------------------------------------------------

def test_completion_offers_job_ids_and_inputs(home, videos):
    home.drop(videos["clip.mp4"], "cam1/a.mp4")
    assert home.start("--once", wait_ready=False).wait(timeout=60) == 0
    job = home.json("show", "cam1/a.mp4")

    def complete(*words: str) -> list[str]:
        env = {**home.env(), "_FORGESYTE_COMPLETE": "bash_complete",
               "COMP_WORDS": " ".join(("forgesyte",) + words), "COMP_CWORD": str(len(words))}
        out = subprocess.run([sys.executable, "-m", "forgesyte"], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
        return [line for line in out.stdout.splitlines() if line]

    assert f"plain,{job['id']}" in complete("show", job["id"][:6])
    assert "plain,cam1/a.mp4" in complete("wait", "cam")
    assert "plain,cam1/a.mp4" in complete("--home", str(home.root), "cancel", "cam1/")
    assert complete("--home", str(home.root / "nowhere"), "show", "") == []
    assert not (home.root / "nowhere").exists()


def test_completion_of_inbox_paths_for_wait_and_why_and_of_jobs_for_similar(home, videos, tmp_path):
    """`wait` and `why` complete files in the inbox that are not jobs yet, spelt as the CLI
    shows names (a word the shell completes is one `why` and `wait` take back); `similar`
    completes job ids like `show`. A Tab on a missing or damaged state answers nothing
    and creates nothing."""
    home.drop(videos["clip.mp4"], "cam1/a.mp4")
    assert home.start("--once", wait_ready=False).wait(timeout=60) == 0
    job = home.json("show", "cam1/a.mp4")
    home.drop(videos["clip.mp4"], "cam2/new.mp4")  # not jobs: no daemon runs
    (home.inbox / "cam2" / "line\nbreak.mp4").write_bytes(b"x")
    (home.inbox / os.fsdecode(b"caf\xe9.mp4")).write_bytes(b"x")
    (home.inbox / ".partial.mp4").write_bytes(b"x")
    (home.inbox / "deep" / "er").mkdir(parents=True)
    (home.inbox / "deep" / "er" / "x.mp4").write_bytes(b"x")

    def complete(*words: str) -> list[str]:
        env = {**home.env(), "_FORGESYTE_COMPLETE": "bash_complete",
               "COMP_WORDS": " ".join(("forgesyte",) + words), "COMP_CWORD": str(len(words))}
        out = subprocess.run([sys.executable, "-m", "forgesyte"], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        return [line.removeprefix("plain,") for line in out.stdout.splitlines() if line]

    offered = complete("wait", "")
    assert job["id"] in offered and offered.count("cam1/a.mp4") == 1  # a job and a file: once
    assert {"cam2/", "deep/", "caf\\xe9.mp4"} <= set(offered)
    assert ".partial.mp4" not in offered and ".partial.mp4" in complete("why", ".")  # hidden when asked
    assert set(complete("wait", "cam2/")) == {"cam2/new.mp4", "cam2/line\\x0abreak.mp4"}
    assert complete("why", "de") == ["deep/er/x.mp4"]  # lone folders are entered
    assert complete("why", "caf") == ["caf\\xe9.mp4"]
    assert complete("why", "cam1/") == ["cam1/a.mp4"]
    # What the shell completed is what the commands take back.
    for word in ("cam2/line\\x0abreak.mp4", "caf\\xe9.mp4"):
        assert home.json("why", word)["verdict"] not in ("missing", "invalid"), word
    assert home.cli("wait", "cam2/new.mp4", "--timeout", "0").returncode == 124  # a file, not yet a job
    assert job["id"] in complete("similar", job["id"][:6])
    assert "cam1/a.mp4" in complete("similar", "cam1")
    assert complete("similar", "cam2") == []  # similar takes jobs only

    nowhere = tmp_path / "nowhere"
    for command in ("wait", "why", "similar"):
        assert complete("--home", str(nowhere), command, "") == []
    assert not nowhere.exists()

    for path in home.state.rglob("*"):  # every state file garbled: jobs complete to nothing
        if path.is_file():
            path.write_bytes(b"\x00garbage" * 10)
    assert complete("similar", "") == [] and complete("show", job["id"][:6]) == []
    assert "cam2/" in complete("wait", "") and job["id"] not in complete("wait", "")  # the inbox still lists


# -- Ctrl-C ---------------------------------------------------------------------------------------

def test_ctrl_c_finishes_running_jobs_and_a_second_stops_at_once(home, videos, gate):  # noqa: F811
    home.config.write_text(home.config.read_text().replace("stop_grace = 1.0", "stop_grace = 120"))
    proc = home.start()
    home.drop(videos["clip.mp4"], "a.mp4")
    wait_until(lambda: started(gate), 30, "the gated job to start")
    job = home.json("show", "a.mp4")
    worker = int((gate / f"started-{job['id']}").read_text())
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends its foreground group
    wait_until(lambda: "Press Ctrl-C again to stop at once" in home.log_text(), 10, "the first Ctrl-C's message")
    assert "finishing 1 running job (up to 120 s) before stopping" in home.log_text()
    assert proc.poll() is None and alive(worker)  # still finishing, not killed
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    record = home.json("show", "a.mp4")
    assert record["status"] == "pending" and record["attempts"] == 0
    wait_until(lambda: not alive(worker), 10, "the stopped job's worker to be gone")


# -- events ---------------------------------------------------------------------------------------

def test_events_list_follow_and_since(home, videos):
    home.drop(videos["clip.mp4"], "a.mp4")
    (home.inbox / "b.mp4").write_bytes(b"junk")
    assert home.start("--once", wait_ready=False).wait(timeout=60) == 1
    lines = home.cli("events", "--json").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    for event in events:
        validator("event").validate(event)
    a = [e["status"] for e in events if e["input"] == "a.mp4"]
    assert a == ["pending", "running", "completed"]
    failed = [e for e in events if e["input"] == "b.mp4"][-1]
    assert failed["status"] == "failed" and failed["error"].startswith("Plugin 'metadata' failed")
    text = home.cli("events").stdout.splitlines()
    assert len(text) == len(events)
    assert [line.split()[2] for line in text if line.endswith(" a.mp4")] == ["pending", "running", "completed"]

    log = EventLog(home.state)
    log.add({"time": utc_in(-7200), "job_id": "old0000000000000", "input": "old.mp4",
             "status": "completed", "error": None})
    log.flush()
    assert "old.mp4" in home.cli("events").stdout
    recent = home.cli("events", "--since", "1h").stdout
    assert "old.mp4" not in recent and "a.mp4" in recent
    bad = home.cli("events", "--since", "yesterday")
    assert bad.returncode == 1 and one_sentence(bad).startswith("--since: 'yesterday' is not a duration")

    daemon = home.start()
    follow = subprocess.Popen([sys.executable, "-m", "forgesyte", "events", "--follow", "--json", "--since", "1s"],
                              env=home.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        home.drop(videos["clip.webm"], "c.webm")
        seen: list[dict] = []
        lines: queue.Queue = queue.Queue()  # a reader thread: select() cannot see Python's read buffer
        threading.Thread(target=lambda: [lines.put(line) for line in follow.stdout], daemon=True).start()
        deadline = time.monotonic() + 60
        while not any(e["input"] == "c.webm" and e["status"] == "completed" for e in seen):
            assert time.monotonic() < deadline, f"events --follow showed only {seen}\n{home.log_text()}"
            try:
                seen.append(json.loads(lines.get(timeout=1)))
            except queue.Empty:
                pass
        assert [e["status"] for e in seen if e["input"] == "c.webm"] == ["pending", "running", "completed"]
    finally:
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=10) == 0
    assert home.stop(daemon) == 0


def test_names_that_are_not_utf8_as_arguments_and_in_json(home):
    """The raw bytes of a name and its shown spelling both work as JOB and PATH; JSON
    output stays valid (the key spelling, never a lone surrogate)."""
    home.inbox.mkdir(parents=True)
    (home.inbox / os.fsdecode(b"caf\xe9.mp4")).write_bytes(b"junk, not a video")
    assert home.start("--once", wait_ready=False).wait(timeout=60) == 1

    def cli(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "forgesyte", *args], env=home.env(),
                              capture_output=True, timeout=60, check=False)

    waited = cli("wait", "--json", b"caf\xe9.mp4", b"gone\xff.mp4")
    assert waited.returncode == 1, waited.stderr
    document = json.loads(waited.stdout)
    validator("wait").validate(document)
    assert [j["input"] for j in document["jobs"]] == ["caf\\xe9.mp4"]
    assert document["unknown"] == ["gone\\xff.mp4"]
    answer = json.loads(cli("why", "--json", b"caf\xe9.mp4").stdout)
    assert answer["verdict"] == "job" and answer["path"] == "caf\\xe9.mp4"
    assert json.loads(cli("show", "--json", "caf\\xe9.mp4").stdout)["input"] == "caf\\xe9.mp4"
    outside = json.loads(cli("why", "--json", b"/elsewhere/\xff.mp4").stdout)
    assert outside["verdict"] == "invalid" and outside["path"] == "/elsewhere/\\xff.mp4"
