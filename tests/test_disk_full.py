"""A full or read-only output disk pauses the daemon; it never fails jobs for it (issue 9, item 5).

The output folder is a real, small tmpfs (mounted for the test; root only). A
test plugin writes a 200 KiB artifact in 4 KiB pieces, so on a full disk it
leaves a partial file behind unless the worker removes it. Nothing is mocked.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import register_test_plugin, wait_until

PLUGIN = '''
class Writer:
    name = "writer"

    def run(self, video, ctx):
        path, key = ctx.artifact("blobs/blob.bin")
        with open(path, "wb") as fh:
            for _ in range(50):
                fh.write(b"x" * 4096)
                fh.flush()
        return {"bytes": 50 * 4096}
'''

PAUSED = "dispatch is paused"
RESUMED = "dispatch resumed"


def _mount_tmpfs(target: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs", str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _fill(folder: Path) -> Path:
    """Write until the disk says ENOSPC; returns the filler file."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    # The last partial block may still leave a few bytes: take them too.
    for i in range(64):
        try:
            (folder / f"filler-{i}").write_bytes(b"\0" * 512)
        except OSError:
            break
    return filler


def _files(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith("filler"))


@pytest.fixture
def small_output(home, tmp_path):
    output = tmp_path / "small-output"
    _mount_tmpfs(output, "2m")
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "writer_plugin.py").write_text(PLUGIN)
    register_test_plugin(home, folder, "writer", "writer_plugin:Writer")
    home.config.write_text(
        f'settle_seconds = 0.3\nscan_interval = 60\nstop_grace = 0.5\nworkers = 2\n'
        f'plugins = ["writer"]\noutput = "{output}"\n')
    yield output
    for proc in home.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    subprocess.run(["umount", "-l", str(output)], capture_output=True)


def test_full_disk_pauses_then_resumes_without_failing_jobs(home, videos, small_output):
    proc = home.start()
    filler = _fill(small_output)
    data = videos["clip.mp4"].read_bytes()
    for i in range(3):
        (home.inbox / f"v{i}.mp4").write_bytes(data + b"%d" % i)

    # The first job to try hits the wall; dispatch stops; every job stays pending.
    wait_until(lambda: PAUSED in home.log_text(), 60, "the daemon to pause for the full disk")
    first = wait_until(lambda: [j for j in home.jobs() if j["error"]], 30, "a job to say why it waits")[0]
    assert "No space left on device" in first["error"] and "plugin 'writer'" in first["error"], first
    assert str(small_output) not in first["error"]  # a key, not an absolute path
    assert "/blobs/blob.bin" in first["error"] or "results document" in first["error"]
    jobs = wait_until(lambda: (lambda js: js if len(js) == 3 else None)(home.jobs()), 30, "three jobs")
    assert {j["status"] for j in jobs} == {"pending"}, jobs
    assert all(j["attempts"] == 0 for j in jobs), jobs  # no attempt used
    assert _files(small_output) == []  # no zero-byte or partial artifact left behind
    log = home.log_text()
    assert log.count(PAUSED) == 1, log  # loudly, once: not a line per retry
    assert proc.poll() is None

    # Space returns: dispatch resumes by itself and every job completes.
    filler.unlink()
    for extra in small_output.glob("filler-*"):
        extra.unlink()
    for i in range(3):
        job = home.wait_status(f"v{i}.mp4", timeout=90)
        assert job["status"] == "completed" and job["error"] is None, job
        assert job["attempts"] == 1, job
        document = json.loads((small_output / job["output"]).read_text())
        artifact = document["plugins"]["writer"]["artifacts"][0]
        assert (small_output / artifact).stat().st_size == 50 * 4096
    assert home.log_text().count(RESUMED) == 1
    assert home.log_text().count(PAUSED) == 1


def test_read_only_output_pauses_until_remounted(home, videos, small_output):
    proc = home.start()
    subprocess.run(["mount", "-o", "remount,ro", str(small_output)], check=True)
    try:
        home.drop(videos["clip.mp4"], "ro.mp4")
        wait_until(lambda: PAUSED in home.log_text(), 60, "the daemon to pause for the read-only disk")
        job = wait_until(lambda: (lambda j: j if j["error"] else None)(home.json("show", "ro.mp4")), 30,
                         "the job to say why it waits")
        assert job["status"] == "pending" and "Read-only file system" in job["error"], job
        assert str(small_output) not in job["error"], job  # a key, not an absolute path
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_output)], check=True)
    job = home.wait_status("ro.mp4", timeout=90)
    assert job["status"] == "completed", job
    assert proc.poll() is None
    assert home.stop(proc) == 0


def test_full_state_disk_is_logged_once_not_per_retry(home, videos, tmp_path):
    """The daemon retries state writes at every flush (20 times a second when busy): the log
    says each ongoing write trouble once, not once per retry, and says when it clears."""
    state = tmp_path / "small-state"
    _mount_tmpfs(state, "4m")
    try:
        home.config.write_text(f'settle_seconds = 0.3\nscan_interval = 60\nstop_grace = 0.5\n'
                               f'state = "{state}"\n')
        proc = home.start()
        filler = _fill(state)
        data = videos["clip.mp4"].read_bytes()
        for i in range(3):
            (home.inbox / f"s{i}.mp4").write_bytes(data + b"%d" % i)
        wait_until(lambda: "No space left on device" in home.log_text(), 60, "a state write to fail")
        time.sleep(3)  # the daemon keeps retrying meanwhile: the log must not grow with it

        def trouble() -> list[str]:
            return [line.split(": ", 1)[1] for line in home.log_text().splitlines()
                    if "No space left on device" in line]
        lines = trouble()
        assert lines and len(lines) == len(set(lines)), lines  # each condition once
        assert proc.poll() is None
        filler.unlink()
        for extra in state.glob("filler-*"):
            extra.unlink()
        for i in range(3):
            assert home.wait_status(f"s{i}.mp4")["status"] == "completed"
        wait_until(lambda: "written again" in home.log_text(), 30, "the line saying it cleared")
        assert trouble() == lines
        assert home.stop(proc) == 0
    finally:
        for proc in home.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        subprocess.run(["umount", "-l", str(state)], capture_output=True)
