"""A real `forgesyte run` subprocess on a temp home: drop a video, read its results."""

from __future__ import annotations

import json
import shutil
import signal

from tests.conftest import CLIPS, register_test_plugin, wait_until


def test_dropped_video_completes_with_known_metadata(home, videos):
    proc = home.start()
    home.drop(videos["clip.mp4"], "cam1/clip.mp4")
    job = home.wait_status("cam1/clip.mp4")
    assert job["status"] == "completed", job
    assert job["input"] == "cam1/clip.mp4"
    assert job["plugins"] == ["metadata"]
    assert job["attempts"] == 1 and job["progress"] == 100 and job["error"] is None
    assert job["size"] == videos["clip.mp4"].stat().st_size

    status = home.json("status")
    assert status["counts"] == {"pending": 0, "running": 0, "completed": 1, "failed": 0}
    assert status["total"] == 1 and status["daemon"]["running"] and status["daemon"]["pid"] == proc.pid
    assert status["inbox"] == str(home.inbox)

    doc = json.loads(home.cli("results", "cam1/clip.mp4", check=True).stdout)
    assert doc["job_id"] == job["id"] and doc["input"] == "cam1/clip.mp4"
    meta = doc["plugins"]["metadata"]
    spec = CLIPS["clip.mp4"]
    assert meta["format"] == "mov,mp4,m4a,3gp,3g2,mj2"
    assert meta["video"]["codec"] == "h264"
    assert (meta["video"]["width"], meta["video"]["height"]) == (spec.width, spec.height)
    assert meta["video"]["fps"] == spec.fps
    assert meta["video"]["frames"] == spec.frames
    assert abs(meta["duration_s"] - spec.seconds) < 0.1
    assert meta["audio"] == {"codec": "aac", "sample_rate": 48000, "channels": 2}
    assert meta["size_bytes"] == videos["clip.mp4"].stat().st_size

    assert home.stop(proc) == 0


def test_mkv_and_webm_report_estimated_frames(home, videos):
    home.drop(videos["clip.mkv"], "a.mkv")
    home.drop(videos["clip.webm"], "b.webm")
    proc = home.start("--once")
    assert proc.wait(timeout=60) == 0, home.log_text()
    for name, key in (("clip.mkv", "a.mkv"), ("clip.webm", "b.webm")):
        spec = CLIPS[name]
        meta = json.loads(home.cli("results", key, "--plugin", "metadata", check=True).stdout)
        assert meta["format"] == "matroska,webm"
        assert meta["video"]["codec"] == "vp9"
        assert meta["video"]["fps"] == spec.fps
        assert meta["video"]["frames_estimated"] is True
        assert abs(meta["video"]["frames"] - spec.frames) <= 1
    assert json.loads(home.cli("results", "a.mkv", "--plugin", "metadata").stdout)["audio"]["codec"] == "opus"
    assert json.loads(home.cli("results", "b.webm", "--plugin", "metadata").stdout)["audio"] is None


def test_bad_file_fails_with_a_sentence_and_daemon_carries_on(home, videos):
    proc = home.start()
    (home.inbox / "notes.mp4").write_text("this is not a video\n")
    home.drop(videos["clip.mp4"], "good.mp4")
    bad = home.wait_status("notes.mp4")
    good = home.wait_status("good.mp4")
    assert bad["status"] == "failed" and good["status"] == "completed"
    assert "not a decodable video" in bad["error"] and "\n" not in bad["error"]
    res = home.cli("results", "notes.mp4")
    assert res.returncode == 1 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert proc.poll() is None
    assert home.stop(proc) == 0


def test_run_once_exit_codes(home, videos):
    home.drop(videos["clip.mp4"], "ok.mp4")
    assert home.start("--once").wait(timeout=60) == 0
    (home.inbox / "broken.mkv").write_bytes(b"\x1aE\xdf\xa3" + b"\x00" * 100)
    assert home.start("--once").wait(timeout=60) == 1
    counts = home.json("status")["counts"]
    assert counts["completed"] == 1 and counts["failed"] == 1
    # Nothing new: a third run processes nothing and succeeds.
    assert home.start("--once").wait(timeout=60) == 0
    assert home.json("status")["total"] == 2


def test_relocated_home_keeps_results_reachable(home, videos, tmp_path):
    home.drop(videos["clip.mp4"], "deep/dir/clip.mp4")
    assert home.start("--once").wait(timeout=60) == 0
    job = home.json("show", "deep/dir/clip.mp4")
    for path in home.state.rglob("*"):
        if path.is_file():
            assert str(home.root) not in path.read_text(errors="replace"), path
    assert not job["output"].startswith("/")

    moved = tmp_path / "elsewhere" / "moved-home"
    moved.parent.mkdir()
    shutil.move(str(home.root), str(moved))
    home.root = moved
    home.config = moved / "forgesyte.toml"
    doc = json.loads(home.cli("results", job["id"], check=True).stdout)
    assert doc["plugins"]["metadata"]["video"]["codec"] == "h264"
    assert home.json("status")["output"] == str(moved / "output")


def test_output_flag_pointing_at_a_copy(home, videos, tmp_path):
    home.drop(videos["clip.mp4"], "clip.mp4")
    assert home.start("--once").wait(timeout=60) == 0
    copy = tmp_path / "copy-of-output"
    shutil.copytree(home.output, copy)
    shutil.rmtree(home.output)
    assert home.cli("results", "clip.mp4").returncode == 1
    proc = home.cli("--output", str(copy), "results", "clip.mp4")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["input"] == "clip.mp4"


def test_second_daemon_on_same_state_exits_2(home):
    first = home.start()
    second = home.start(wait_ready=False)
    assert second.wait(timeout=30) == 2
    assert "already holds" in home.log_text()
    assert first.poll() is None
    assert home.stop(first, signal.SIGINT) == 0


def test_sigterm_mid_job_returns_it_to_pending(home, videos, tmp_path):
    """A slow plugin is stopped by SIGTERM; its job goes back to pending, not failed."""
    plugin_dir = tmp_path / "slowplugin"
    plugin_dir.mkdir()
    (plugin_dir / "slow_plugin.py").write_text(
        "import time\n"
        "class Slow:\n"
        "    name = 'slow'\n"
        "    def run(self, video, ctx):\n"
        "        time.sleep(60)\n"
        "        return {}\n"
    )
    register_test_plugin(home, plugin_dir, "slow", "slow_plugin:Slow")
    proc = home.start("--plugins", "slow")
    home.drop(videos["clip.mp4"], "clip.mp4")
    home.wait_status("clip.mp4", ("running",))
    assert home.stop(proc) == 0
    job = home.json("show", "clip.mp4")
    assert job["status"] == "pending" and job["attempts"] == 0


def test_retry_while_daemon_runs(home, videos):
    proc = home.start()
    (home.inbox / "x.mp4").write_text("garbage")
    first = home.wait_status("x.mp4")
    assert first["status"] == "failed"
    home.drop(videos["clip.mp4"], "x.mp4")  # fixed by the user... new content is a new job
    wait_until(lambda: len(home.jobs()) == 2 and all(j["status"] == "completed" or j["id"] == first["id"]
                                                      for j in home.jobs()), 30, "new job for new content")
    again = home.cli("retry", first["id"])
    assert again.returncode == 0, again.stderr
    job = home.wait_status(first["id"], timeout=30)
    # The old content is gone, so the retried job fails again, saying which job has the new one.
    assert job["status"] == "failed" and job["attempts"] == 0
    assert "has changed since this job was made" in job["error"]
    assert home.cli("retry", "nosuchjob").returncode == 1
    assert home.stop(proc) == 0
