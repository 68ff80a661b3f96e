"""Helpers shared by the benchmarks: temp homes, a real daemon, medians."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def median(values):
    return statistics.median(values) if values else float("nan")


def p95(values):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


class Daemon:
    """A real `forgesyte run` on a temp home, configured by TOML text."""

    def __init__(self, config: str = "", args: tuple[str, ...] = ()):
        self.tmp = tempfile.TemporaryDirectory(prefix="forgesyte-bench-")
        self.home = Path(self.tmp.name)
        (self.home / "forgesyte.toml").write_text(config)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FORGESYTE_")}
        self.env.update(FORGESYTE_HOME=str(self.home), FORGESYTE_CONFIG=str(self.home / "forgesyte.toml"))
        self.args = args
        self.proc = None

    @property
    def inbox(self) -> Path:
        return self.home / "inbox"

    @property
    def state(self) -> Path:
        return self.home / "state"

    def start(self) -> "Daemon":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "forgesyte", "run", *self.args], env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        line = self.proc.stdout.readline().decode()
        assert "watching" in line, line
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forgesyte", *args], env=env,
                          capture_output=True, text=True, check=True)


def wait_for(predicate, timeout=120.0, interval=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("benchmark condition not reached")
