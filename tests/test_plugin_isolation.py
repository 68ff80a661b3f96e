"""A bad plugin never takes the daemon down: each failure mode fails only its job.

Test plugins are real modules registered through real entry points (a
.dist-info on PYTHONPATH); per-folder rules route each input to one of them.
"""

from __future__ import annotations

import json
import os
import time

from tests.conftest import wait_until

BAD_PLUGINS = '''
import ctypes, os, time
from forgesyte.plugins.base import PluginError

class Raiser:
    name = "raiser"
    def run(self, video, ctx):
        raise RuntimeError("boom in the plugin")

class Segfault:
    name = "segv"
    def run(self, video, ctx):
        ctypes.string_at(0)  # SIGSEGV in the worker process

class Hang:
    name = "hang"
    def run(self, video, ctx):
        import subprocess
        child = subprocess.Popen(["sleep", "600"])  # a helper process, as ffmpeg would be
        open(os.environ["FORGESYTE_TEST_CHILD"], "w").write(str(child.pid))
        while True:
            time.sleep(1)

class Hog:
    name = "hog"
    def run(self, video, ctx):
        hoard = []
        while True:
            hoard.append(bytes(256 * 1024 * 1024))  # calloc: address space, quickly

class Flaky:
    name = "flaky"
    def run(self, video, ctx):
        counter = os.environ["FORGESYTE_TEST_COUNTER"]
        n = int(open(counter).read() or 0) if os.path.exists(counter) else 0
        open(counter, "w").write(str(n + 1))
        if n < 2:
            raise PluginError("the license server did not answer", transient=True)
        ctx.progress(1.0)
        return {"tries": n + 1}

class Progress:
    name = "progress"
    def run(self, video, ctx):
        step = float(os.environ.get("FORGESYTE_TEST_STEP", "0.075"))
        for i in range(20):
            ctx.progress(i / 20)
            time.sleep(step)
        return {"ok": True}
'''

RULES = """
plugin_timeout = 3
worker_memory_mb = 3000
retry_backoff = 0.2
max_attempts = 3
workers = 2

[[rules]]
match = "bad/raise*"
plugins = ["metadata", "raiser"]

[[rules]]
match = "bad/segv*"
plugins = ["segv"]

[[rules]]
match = "bad/hang*"
plugins = ["hang"]

[[rules]]
match = "bad/hog*"
plugins = ["hog"]

[[rules]]
match = "flaky/*"
plugins = ["flaky"]

[[rules]]
match = "slow/*"
plugins = ["progress"]
"""


def setup_plugins(home, tmp_path):
    folder = tmp_path / "badplugins"
    folder.mkdir()
    (folder / "bad_plugins.py").write_text(BAD_PLUGINS)
    dist = folder / "bad_plugins-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugins\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[forgesyte.plugins]\n" + "".join(
        f"{name} = bad_plugins:{cls}\n" for name, cls in (
            ("raiser", "Raiser"), ("segv", "Segfault"), ("hang", "Hang"), ("hog", "Hog"),
            ("flaky", "Flaky"), ("progress", "Progress"))))
    home.add_pythonpath(folder)
    home.extra_env["FORGESYTE_TEST_COUNTER"] = str(tmp_path / "flaky-count")
    home.extra_env["FORGESYTE_TEST_CHILD"] = str(tmp_path / "hang-child.pid")
    home.config.write_text("settle_seconds = 0.3\nscan_interval = 60\nstop_grace = 1\n" + RULES)


def test_each_failure_mode_fails_only_its_job(home, videos, tmp_path):
    setup_plugins(home, tmp_path)
    proc = home.start()
    data = videos["clip.mp4"].read_bytes()
    started = time.monotonic()
    for name in ("raise", "segv", "hang", "hog"):
        (home.inbox / "bad").mkdir(parents=True, exist_ok=True)
        (home.inbox / f"bad/{name}.mp4").write_bytes(data + name.encode())
    for i in range(4):
        (home.inbox / "good").mkdir(exist_ok=True)
        (home.inbox / f"good/{i}.mp4").write_bytes(data + b"good%d" % i)

    expected = {
        "bad/raise.mp4": "Plugin 'raiser' crashed: RuntimeError: boom in the plugin.",
        "bad/segv.mp4": "Plugin 'segv' crashed the worker (killed by SIGSEGV).",
        "bad/hang.mp4": "Plugin 'hang' did not finish within 3 s and was stopped.",
        "bad/hog.mp4": "Plugin 'hog' ran out of memory.",
    }
    for key, error in expected.items():
        job = home.wait_status(key, timeout=30)
        assert job["status"] == "failed" and job["error"] == error, job
    for i in range(4):
        assert home.wait_status(f"good/{i}.mp4")["status"] == "completed"
    # The timeout killed the hung plugin's whole process group, its child too.
    child = int((tmp_path / "hang-child.pid").read_text())
    wait_until(lambda: not os.path.exists(f"/proc/{child}") or
               open(f"/proc/{child}/stat").read().split()[2] == "Z", 10, "the plugin's child to be killed")
    # Timeout (3 s) plus a few seconds covers everything, even sharing two workers.
    assert time.monotonic() - started < 3 + 12
    # Partial failure: the section of the plugin that succeeded is kept, the failing one holds its error.
    job = home.json("show", "bad/raise.mp4")
    document = json.loads((home.output / job["output"]).read_text())
    assert document["plugins"]["metadata"]["video"]["codec"] == "h264"
    assert document["plugins"]["raiser"] == {"error": expected["bad/raise.mp4"]}
    assert job["plugins"] == ["metadata", "raiser"]  # the record says what it ran
    assert proc.poll() is None
    assert home.stop(proc) == 0


def test_transient_failure_retries_with_backoff(home, videos, tmp_path):
    setup_plugins(home, tmp_path)
    proc = home.start()
    home.drop(videos["clip.mp4"], "flaky/a.mp4")
    job = home.wait_status("flaky/a.mp4", timeout=30)
    assert job["status"] == "completed" and job["attempts"] == 3, job
    assert json.loads(home.cli("results", "flaky/a.mp4", "--plugin", "flaky").stdout) == {"tries": 3}
    assert "retrying in 0.2 s" in home.log_text() and "retrying in 0.4 s" in home.log_text()
    assert home.stop(proc) == 0


def test_progress_reaches_the_record(home, videos, tmp_path):
    setup_plugins(home, tmp_path)
    # 6 s of work: a loaded machine's `show` (a new Python each poll) still sees it mid-way
    home.config.write_text(home.config.read_text().replace("plugin_timeout = 3", "plugin_timeout = 30"))
    home.extra_env["FORGESYTE_TEST_STEP"] = "0.3"
    proc = home.start()
    home.drop(videos["clip.mp4"], "slow/a.mp4")
    seen = wait_until(lambda: (lambda j: j["progress"] if j["status"] == "running" and 0 < j["progress"] < 100
                               else None)(home.wait_status("slow/a.mp4", ("running", "completed"))),
                      20, "a progress value between 0 and 100 while running")
    assert 0 < seen < 100
    final = home.wait_status("slow/a.mp4")
    assert final["progress"] == 100, (final, home.log_text()[-1500:])
    assert home.stop(proc) == 0


IMPORT_FAILURES = {
    # module name: (module source, what `plugins --json` says)
    "raise_on_import": ("raise RuntimeError('no licence file')\n", "RuntimeError: no licence file"),
    "exit_on_import": ("import sys\nsys.exit(3)\n", "its import called sys.exit(3)"),
    "segv_on_import": ("import ctypes\nctypes.string_at(0)\n", "its import crashed the process (SIGSEGV)"),
    "missing_dep": ("import not_a_module_anywhere\n",
                    "ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
}


def install_broken_plugins(home, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    dist = folder / "broken_plugins-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugins\nVersion: 0.0\n")
    lines = ["[forgesyte.plugins]"]
    for module, (source, _) in IMPORT_FAILURES.items():
        (folder / f"{module}.py").write_text(source)
        lines.append(f"{module} = {module}:Plugin")
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    home.add_pythonpath(folder)


def test_plugins_lists_every_import_failure_and_the_rest(home, tmp_path):
    install_broken_plugins(home, tmp_path)
    proc = home.cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {p["name"]: p for p in json.loads(proc.stdout)}
    for module, (_, error) in IMPORT_FAILURES.items():
        assert listed[module]["error"] == error, listed[module]
    for name in ("metadata", "scenes", "motion", "thumbnails", "faces", "fingerprint"):
        assert listed[name]["error"] is None, listed[name]
    text = home.cli("plugins")
    assert text.returncode == 0 and "LOAD ERROR: its import crashed the process (SIGSEGV)" in text.stdout
    doctor = home.cli("doctor")
    for module in IMPORT_FAILURES:
        assert module in doctor.stdout, doctor.stdout


def test_a_broken_plugin_costs_only_its_jobs(home, videos, tmp_path):
    install_broken_plugins(home, tmp_path)
    rules = "".join(f'[[rules]]\nmatch = "{m}/*"\nplugins = ["metadata", "{m}"]\n\n' for m in IMPORT_FAILURES)
    home.config.write_text(home.config.read_text() + "\n" + rules)
    proc = home.start()  # configured but broken: a warning, not a refusal
    for module in IMPORT_FAILURES:
        home.drop(videos["clip.mp4"], f"{module}/a.mp4")
    home.drop(videos["clip.mp4"], "plain/a.mp4")
    assert home.wait_status("plain/a.mp4")["status"] == "completed"
    expected = {
        "raise_on_import": "Plugin 'raise_on_import' failed to load (RuntimeError: no licence file).",
        "exit_on_import": "Plugin 'exit_on_import' failed to load (its import called sys.exit(3)).",
        "segv_on_import": "Plugin 'segv_on_import' crashed the worker (killed by SIGSEGV).",
        "missing_dep": "Plugin 'missing_dep' failed to load "
                       "(ModuleNotFoundError: No module named 'not_a_module_anywhere').",
    }
    for module, error in expected.items():
        job = home.wait_status(f"{module}/a.mp4")
        assert job["status"] == "failed" and job["error"] == error, job
    assert "Plugin 'segv_on_import' cannot be loaded" in home.log_text()
    home.drop(videos["clip.mp4"], "plain/b.mp4")  # the workers that crashed were replaced
    assert home.wait_status("plain/b.mp4")["status"] == "completed"
    assert proc.poll() is None
    assert home.stop(proc) == 0
    # Unknown (not installed at all) is still a configuration error.
    unknown = home.cli("run", "--once", "--plugins", "metadata,not_installed")
    assert unknown.returncode == 2 and "Unknown plugin 'not_installed'" in unknown.stderr
