"""The example external plugin package: installed with pip, found by entry point, run by the daemon."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from tests.videogen import VideoSpec, make_video

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "forgesyte-brightness"


def test_example_plugin_installs_and_runs_through_the_daemon(home, tmp_path):
    target = tmp_path / "site"
    # --no-deps: ForgeSyte, PyAV and NumPy are already in this environment;
    # --no-build-isolation: build with the venv's setuptools, no download.
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True, timeout=300)
    home.add_pythonpath(target)
    home.config.write_text(home.config.read_text() + "\n[plugin.brightness]\nevery = 2\n")

    listed = {p["name"]: p for p in home.json("plugins")}
    assert listed["brightness"]["version"] == "1.1.0" and listed["brightness"]["error"] is None

    grey = make_video(tmp_path / "grey.mp4", VideoSpec(width=160, height=120, fps=10, seconds=2.0, audio=None),
                      lambda i, s: __import__("numpy").full((s.height, s.width, 3), 100, dtype="uint8"))
    home.drop(grey, "grey.mp4")
    assert home.start("--once", "--plugins", "metadata,brightness").wait(timeout=120) == 0, home.log_text()
    section = json.loads(home.cli("results", "grey.mp4", "--plugin", "brightness", check=True).stdout)
    assert abs(section["mean"] - 100) <= 3 and section["samples"] == 10  # 20 frames, every 2nd
    assert section["artifacts"] == [section["csv"]]
    assert not section["csv"].startswith("/")
    rows = list(csv.reader(open(home.output / section["csv"])))
    assert rows[0] == ["time_s", "brightness"] and len(rows) == 11
