"""Shared fixtures: real videos made with PyAV, real homes, real daemon subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.videogen import VideoSpec, make_video

CLIPS = {
    # name: spec with known ground truth
    "clip.mp4": VideoSpec(codec="libx264", width=320, height=240, fps=25, seconds=2.0, audio="aac"),
    "clip.mkv": VideoSpec(codec="libvpx-vp9", width=256, height=144, fps=30, seconds=1.0, audio="libopus"),
    "clip.webm": VideoSpec(codec="libvpx-vp9", width=160, height=120, fps=24, seconds=1.5, audio=None),
}


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    out = {}
    for name, spec in CLIPS.items():
        out[name] = make_video(folder / name, spec)
    return out


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
               interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


def write_config(home: Path, **settings: Any) -> Path:
    lines = []
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path = home / "forgesyte.toml"
    home.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def base_env(home: Path, config: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORGESYTE_", "NOTIFY_SOCKET"))}
    env.pop("STATE_DIRECTORY", None)
    env["FORGESYTE_HOME"] = str(home)
    if config is not None:
        env["FORGESYTE_CONFIG"] = str(config)
    return env


@dataclass
class Home:
    """A temp home with helpers to run the real CLI and daemon against it."""

    root: Path
    config: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # for every process the test starts

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def env(self) -> dict[str, str]:
        return {**base_env(self.root, self.config), **self.extra_env}

    def add_pythonpath(self, folder: Path) -> None:
        """Make a folder importable (and its .dist-info entry points visible) in our processes."""
        current = self.extra_env.get("PYTHONPATH")
        self.extra_env["PYTHONPATH"] = str(folder) + (":" + current if current else "")

    def cli(self, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "forgesyte", *args], env=self.env(),
            capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"forgesyte {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json", check=True).stdout)

    def start(self, *args: str, wait_ready: bool = True) -> subprocess.Popen:
        log = open(self.root / f"daemon-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "forgesyte", "run", *args], env=self.env(),
            stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        )
        self.procs.append(proc)
        if wait_ready:
            line = proc.stdout.readline().decode()
            assert "watching" in line, f"daemon did not start: {line!r}\n{self.log_text()}"
            # The lock is taken before the "watching" line; a `--once` run with little to do
            # may already have finished and released it, which is not a failure to start.
            wait_until(lambda: proc.poll() is not None or self.json("status")["daemon"]["running"], 15,
                       "daemon to hold the lock")
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"daemon did not stop within {timeout}s after {signal.Signals(sig).name}")

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("daemon-*.log")))

    def jobs(self) -> list[dict[str, Any]]:
        return self.json("list", "--limit", "100000")

    def wait_status(self, ref: str, statuses: tuple[str, ...] = ("completed", "failed"),
                    timeout: float = 60) -> dict[str, Any]:
        def check():
            proc = self.cli("show", ref, "--json")
            if proc.returncode != 0:
                return None
            job = json.loads(proc.stdout)
            return job if job["status"] in statuses else None
        return wait_until(check, timeout, f"job {ref} to reach {statuses}\n{self.log_text()}", 0.1)

    def drop(self, source: Path, name: str) -> Path:
        """Copy in the way users do: write then close (under the final name)."""
        dest = self.inbox / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(source.read_bytes())
        return dest


@pytest.fixture
def home(tmp_path) -> Home:
    root = tmp_path / "home"
    config = write_config(root, settle_seconds=0.3, scan_interval=60, workers=2, plugin_timeout=60, stop_grace=1.0)
    h = Home(root, config)
    yield h
    for proc in h.procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def register_test_plugin(home, plugin_dir, name, ref):
    """Register a plugin through a real entry point: a .dist-info on PYTHONPATH."""
    dist = plugin_dir / f"{name}_testplugin-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-testplugin\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[forgesyte.plugins]\n{name} = {ref}\n")
    home.add_pythonpath(plugin_dir)
