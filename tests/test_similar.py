"""`forgesyte similar` and the fingerprint index: copies are found, strangers are not.

Copies are made the way they get made: re-encoded at a low bit rate, resized
and re-encoded with another codec, trimmed at the start (tests/videogen.py
transcode, real FFmpeg encoders through PyAV).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from forgesyte import similar as fp
from forgesyte.plugins.base import Context
from forgesyte.plugins.builtin.fingerprint import FingerprintPlugin
from forgesyte.storage import recordlog
from forgesyte.storage.results import ResultStore
from tests.test_cli_output import validator
from tests.videogen import VideoSpec, make_video, transcode


def footage(seed: int):
    """Shots of 3 s, each a slow pan over its own texture, with a moving bright block."""
    def frame(i: int, spec: VideoSpec) -> np.ndarray:
        rng = np.random.default_rng(seed * 100 + i // 75)
        h, w = spec.height, spec.width
        wide = rng.integers(0, 255, (h // 40 + 1, 2 * w // 40 + 1, 3), dtype=np.uint8)
        wide = wide.repeat(40, 0).repeat(40, 1)[:h]
        picture = np.ascontiguousarray(wide[:, (i % 75) * 3:(i % 75) * 3 + w])
        x = (i * 4) % (w - 80)
        picture[h // 3:h // 3 + 60, x:x + 80] = 255
        return picture
    return frame


SPEC = VideoSpec(width=640, height=360, fps=25, seconds=8.0, audio=None)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("similar")
    original = make_video(folder / "original.mp4", SPEC, footage(1))
    return {
        "original": original,
        "reencoded": transcode(original, folder / "reencoded.mp4", bit_rate=250_000),
        "resized": transcode(original, folder / "resized.webm", codec="libvpx-vp9", width=320, height=180),
        "trimmed": transcode(original, folder / "trimmed.mp4", start_s=2.4),
        "other": make_video(folder / "other.mp4", SPEC, footage(2)),
    }


def fingerprint(path, **options):
    ctx = Context(job_id="j", input_key="k", options=options, progress=lambda f: None,
                  artifact=lambda name: (None, name), logger=logging.getLogger("test"))
    return FingerprintPlugin().run(path, ctx)


def test_copies_are_near_and_strangers_far(clips):
    base = fp.as_array(fingerprint(clips["original"])["hashes"])
    near = {name: fp.distance(base, fp.as_array(fingerprint(clips[name])["hashes"]))
            for name in ("reencoded", "resized", "trimmed")}
    assert all(d <= 6 for d in near.values()), near
    far = fp.distance(base, fp.as_array(fingerprint(clips["other"])["hashes"]))
    assert far >= 16, far


def test_flat_frames_are_skipped_so_black_videos_match_nothing(tmp_path):
    spec = VideoSpec(width=320, height=180, fps=10, seconds=4.0, audio=None)
    black = make_video(tmp_path / "black.mp4", spec, lambda i, s: np.zeros((s.height, s.width, 3), np.uint8))
    grey = make_video(tmp_path / "grey.mp4", spec, lambda i, s: np.full((s.height, s.width, 3), 128, np.uint8))
    a, b = fingerprint(black), fingerprint(grey)
    assert a["hashes"] == [] and a["skipped_flat"] == 8 and b["hashes"] == []
    assert fp.distance(fp.as_array(a["hashes"]), fp.as_array(b["hashes"])) == float("inf")


def test_the_index_verifies_and_rebuilds_from_results(tmp_path, clips):
    state, output = tmp_path / "state", tmp_path / "output"
    state.mkdir()
    results = ResultStore(output)
    jobs = []
    for i, name in enumerate(("original", "other")):
        job = {"id": f"job{i}", "input": f"{name}.mp4", "status": "completed",
               "plugins": ["metadata", "fingerprint"], "output": None}
        job["output"] = results.write(f"{name}.mp4-job{i}", {"job_id": job["id"], "input": job["input"],
                                                            "plugins": {"fingerprint": fingerprint(clips[name])}})
        jobs.append(job)

    class Store:
        def iter_status(self, *statuses):
            return iter([j for j in jobs if j["status"] in statuses])

    with pytest.raises(fp.IndexDamaged, match="does not exist"):
        fp.read_index(state)
    writer = fp.IndexWriter(state, Store(), results)
    writer.job_finished(jobs[0])  # missing index: rebuilt from both documents
    assert [e["job_id"] for e in fp.read_index(state)] == ["job0", "job1"]
    writer.job_finished(jobs[1])  # verified once: later jobs are appended
    assert [e["job_id"] for e in fp.read_index(state)] == ["job0", "job1", "job1"]
    # garble one byte in the middle: detected, named, rebuilt by the next writer
    path = fp.index_path(state)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    garbled = path.read_bytes()
    with pytest.raises(fp.IndexDamaged, match="^The state file similar/fingerprints.log is damaged at byte"):
        fp.read_index(state)
    fp.IndexWriter(state, Store(), results).job_finished(jobs[1])
    assert [e["job_id"] for e in fp.read_index(state)] == ["job0", "job1"]
    # the damaged file was moved to quarantine before the rebuild, never overwritten
    assert [p.read_bytes() for p in (state / "quarantine").iterdir()] == [garbled]
    # another version is not trusted either: refused with a sentence, kept, rebuilt
    foreign = recordlog.encode({"format": fp.FORMAT, "version": 99})
    path.write_bytes(foreign)
    with pytest.raises(fp.IndexDamaged, match="has format version 99 and this ForgeSyte reads version 1"):
        fp.read_index(state)
    fp.IndexWriter(state, Store(), results).job_finished(jobs[1])
    assert [e["job_id"] for e in fp.read_index(state)] == ["job0", "job1"]
    assert sorted(p.read_bytes() for p in (state / "quarantine").iterdir()) == sorted([garbled, foreign])


def test_similar_on_a_real_daemon(home, clips):
    home.config.write_text(home.config.read_text() + '\nplugins = ["metadata", "fingerprint"]\n'
                           '[[rules]]\nmatch = "plain/*"\nplugins = ["metadata"]\n')
    proc = home.start()
    for name, path in clips.items():
        home.drop(path, f"{name}{path.suffix}")
    home.drop(clips["original"], "plain/original.mp4")
    for name, path in clips.items():
        assert home.wait_status(f"{name}{path.suffix}", timeout=120)["status"] == "completed"
    home.wait_status("plain/original.mp4")
    assert home.stop(proc) == 0

    answer = home.json("similar", "original.mp4")
    validator("similar").validate(answer)
    found = {m["input"]: m["distance"] for m in answer["similar"]}
    assert set(found) == {"reencoded.mp4", "resized.webm", "trimmed.mp4"}, answer
    assert [m["distance"] for m in answer["similar"]] == sorted(found.values())
    # from the other side: the trimmed copy finds its original
    assert "original.mp4" in {m["input"] for m in home.json("similar", "trimmed.mp4")["similar"]}
    assert home.json("similar", "other.mp4")["similar"] == []
    text = home.cli("similar", "original.mp4")
    assert text.returncode == 0 and "reencoded.mp4" in text.stdout and "other.mp4" not in text.stdout
    wide = home.json("similar", "original.mp4", "--max-distance", "64")
    assert "other.mp4" in {m["input"] for m in wide["similar"]}

    missing = home.cli("similar", "plain/original.mp4")
    assert missing.returncode == 1 and "has no fingerprint" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert home.cli("similar", "nope.mp4").returncode == 1

    # A damaged index: the answer comes from the results documents, and says so.
    index = fp.index_path(home.state)
    index.write_bytes(index.read_bytes()[:-20] + b"garbage\n")
    degraded = home.cli("similar", "original.mp4", "--json")
    assert degraded.returncode == 0, degraded.stderr
    assert degraded.stderr.startswith("The state file similar/fingerprints.log is damaged at byte"), degraded.stderr
    assert len(degraded.stderr.strip().splitlines()) == 1 and str(home.state) not in degraded.stderr
    assert {m["input"] for m in json.loads(degraded.stdout)["similar"]} == set(found)
    # The daemon rebuilds it when the next fingerprinted job completes.
    proc = home.start()
    home.drop(clips["other"], "other-again.mp4")
    home.wait_status("other-again.mp4", timeout=120)
    assert home.stop(proc) == 0
    assert len(fp.read_index(home.state)) == len(clips) + 1
    # at start, before the next job: the damaged file named, kept in quarantine, then rebuilt
    log = home.log_text()
    assert "similar/fingerprints.log has 1 damaged line" in log and "moved to quarantine/" in log, log
    assert "rebuilt similar/fingerprints.log from the results documents" in log, log
    assert any(p.name.endswith("similar_fingerprints.log") for p in (home.state / "quarantine").iterdir())


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

HASHES = st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40)


@given(HASHES, HASHES, st.integers(0, 39))
def test_distance_properties(a, b, cut):
    a_arr, b_arr = np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64)
    assert fp.distance(a_arr, a_arr) == 0
    assert fp.distance(a_arr, a_arr[min(cut, len(a) - 1):]) == 0  # a trimmed copy
    d = fp.distance(a_arr, b_arr)
    assert 0 <= d <= 64 and d == fp.distance(b_arr, a_arr)
    hexes = [f"{h:016x}" for h in a]
    assert fp.as_array(hexes).tolist() == a[: fp.MAX_HASHES]
