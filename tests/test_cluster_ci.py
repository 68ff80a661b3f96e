"""CI never skips the cluster tests silently: without `distributed`, tests/test_cluster.py
is a collection error when CI is set (`.ci/run` runs with CI=true) and a skip that says
why otherwise. Real pytest runs of that module, with `distributed` hidden."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run_without_distributed(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    shadow = tmp_path / "shadow" / "distributed"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("No module named \'distributed\' (hidden)")\n')
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(shadow.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "tests/test_cluster.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("ci", ["true"])
def test_ci_fails_when_the_cluster_extra_is_missing(tmp_path, ci):
    proc = _run_without_distributed(tmp_path, ci)
    assert proc.returncode != 0, proc.stdout
    assert "CI is set, so the cluster tests must run" in proc.stdout, proc.stdout
    assert "skipped" not in proc.stdout.splitlines()[-1], proc.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_elsewhere_a_missing_cluster_extra_is_a_skip_with_a_reason(tmp_path, ci):
    proc = _run_without_distributed(tmp_path, ci)
    assert proc.returncode in (0, 5), proc.stdout  # 5: pytest found nothing else to run
    assert "SKIPPED" in proc.stdout and "the cluster extra is not installed" in proc.stdout, proc.stdout
    assert "hidden" in proc.stdout  # the import error itself is part of the reason
