"""`speech`, `ocr` and the bundled models on real footage, offline.

Speech comes from espeak-ng (Debian's speech synthesiser, installed by the
Makefile as root; the speech test skips, saying so, where it is missing);
text is rendered into the frames by OpenCV and must be read back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from forgesyte.plugins.base import Context
from tests.test_cli_output import validator
from tests.videogen import VideoSpec, make_video, text_frame, with_audio

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


def ctx(tmp_path, **options):
    def artifact(name):
        path = tmp_path / "artifacts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, name
    return Context(job_id="j", input_key="k", options=options, progress=lambda f: None,
                   artifact=artifact, logger=logging.getLogger("test"))


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    spec = VideoSpec(width=320, height=180, fps=25, seconds=7.0, audio=None)
    return make_video(tmp_path_factory.mktemp("speech") / "picture.mp4", spec)


# -- speech -----------------------------------------------------------------

@pytest.fixture(scope="module")
def spoken(tmp_path_factory, picture):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; `make test` does as root)")
    folder = tmp_path_factory.mktemp("spoken")
    wav = folder / "sentence.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), SENTENCE], check=True, timeout=60)
    import av

    with av.open(str(wav)) as c:
        length = float(c.duration / 1_000_000)
    return with_audio(picture, wav, folder / "spoken.mp4", offset_s=1.5), length


def test_speech_finds_the_sentence_and_nothing_else(spoken, tmp_path):
    from forgesyte.plugins.builtin.speech import SpeechPlugin

    video, length = spoken
    result = SpeechPlugin().run(video, ctx(tmp_path))
    assert result["audio"] is True
    segments = result["segments"]
    assert segments, result
    assert abs(segments[0]["start_s"] - 1.5) <= 0.3, segments
    assert abs(segments[-1]["end_s"] - (1.5 + length)) <= 0.6, segments
    assert abs(result["speech_s"] - length) <= 1.0 and 0.3 < result["speech_ratio"] < 0.8


def test_speech_silence_noise_and_a_tone_are_not_speech(picture, tmp_path):
    import wave

    from forgesyte.plugins.builtin.speech import SpeechPlugin

    silent = with_audio(picture, None, tmp_path / "silent.mp4")
    result = SpeechPlugin().run(silent, ctx(tmp_path))
    assert result["audio"] is True and result["segments"] == [] and result["speech_s"] == 0
    noise = (np.random.default_rng(7).normal(0, 0.1, 16000 * 5) * 32767).clip(-32767, 32767).astype("<i2")
    with wave.open(str(tmp_path / "noise.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(noise.tobytes())
    hiss = with_audio(picture, tmp_path / "noise.wav", tmp_path / "hiss.mp4", offset_s=1.0)
    assert SpeechPlugin().run(hiss, ctx(tmp_path))["segments"] == []  # white noise
    tone = make_video(tmp_path / "tone.mp4", VideoSpec(width=160, height=120, seconds=4.0, audio="aac"))
    assert SpeechPlugin().run(tone, ctx(tmp_path))["segments"] == []  # a 440 Hz tone


def test_speech_without_an_audio_track_completes(videos, tmp_path):
    from forgesyte.plugins.builtin.speech import SpeechPlugin

    result = SpeechPlugin().run(videos["clip.webm"], ctx(tmp_path))
    assert result == {"audio": False, "speech_s": 0.0, "speech_ratio": 0.0, "segments": []}


# -- ocr --------------------------------------------------------------------

CAPTIONS = [(0.0, 2.0, ["HELLO FORGESYTE"]), (2.0, 4.0, ["SECOND CAPTION 42", "Watch folder"]), (4.0, 5.0, []),
            (5.0, 6.0, ["HELLO FORGESYTE"])]


def caption_frame(i: int, spec: VideoSpec) -> np.ndarray:
    t = i / spec.fps
    for start, end, lines in CAPTIONS:
        if start <= t < end:
            return text_frame(lines, spec)
    return text_frame([], spec)


def test_ocr_reads_captions_back_with_their_times(tmp_path):
    from forgesyte.plugins.builtin.ocr import OcrPlugin

    spec = VideoSpec(width=640, height=360, fps=10, seconds=6.0, audio=None)
    video = make_video(tmp_path / "captions.mp4", spec, caption_frame)
    result = OcrPlugin().run(video, ctx(tmp_path))
    found = {t["text"].upper(): t for t in result["texts"]}
    assert set(found) == {"HELLO FORGESYTE", "SECOND CAPTION 42", "WATCH FOLDER"}, result  # one entry per line
    hello, second = found["HELLO FORGESYTE"], found["SECOND CAPTION 42"]
    assert hello["start_s"] == 0.0 and abs(hello["end_s"] - 6.0) <= 0.1
    assert [[round(a), round(b)] for a, b in hello["seen"]] == [[0, 2], [5, 6]]  # it came back
    assert abs(second["start_s"] - 2.0) <= 0.6 and abs(second["end_s"] - 4.0) <= 0.6 and "seen" not in second
    assert all(t["score"] >= 0.8 for t in result["texts"])
    # One read per picture change (4 pictures), not one per sampled second (6).
    assert result["frames_read"] == 4 and result["frames_sampled"] == 6


# -- offline, and missing extras ----------------------------------------------

OFFLINE = """
import logging, numpy as np
from forgesyte.plugins.builtin.faces import FaceDetector
from forgesyte.plugins.builtin.speech import SileroVad
from forgesyte.plugins.builtin.ocr import engine
FaceDetector().detect(np.zeros((72, 128, 3), np.uint8), 0.75, 0.3)
list(SileroVad().probabilities([np.zeros(512, np.float32)]))
engine(1)(np.full((64, 256, 3), 255, np.uint8))
print("loaded")
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) to cut the network in a new namespace")
def test_every_model_loads_with_the_network_cut(tmp_path):
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"network namespaces are not available here: {probe.stderr.decode().strip()}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}  # no model cache to fall back on
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", OFFLINE], capture_output=True, text=True,
                          timeout=300, env=env, cwd=os.getcwd())
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr[-2000:]


def test_a_missing_extra_names_itself(home, tmp_path):
    # Shadow the two packages with ones that fail as a missing package does (they are
    # installed here; this is the only way to see what a machine without them shows).
    shadow = tmp_path / "shadow"
    for package in ("rapidocr", "onnxruntime"):
        (shadow / package).mkdir(parents=True)
        (shadow / package / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{package}'\", name='{package}')\n")
    home.add_pythonpath(shadow)
    listed = {p["name"]: p for p in json.loads(home.cli("plugins", "--json", check=True).stdout)}
    assert "pip install 'forgesyte[ocr]'" in listed["ocr"]["error"]
    assert "pip install 'forgesyte[speech]'" in listed["speech"]["error"]
    assert listed["faces"]["error"] is None and listed["fingerprint"]["error"] is None


def test_every_builtin_in_one_job_on_a_real_daemon(home, tmp_path):
    """The whole chain in a real worker process: one shared pass, threads in a forked worker."""
    spec = VideoSpec(width=640, height=360, fps=10, seconds=4.0, audio=None)
    video = make_video(tmp_path / "captions.mp4", spec, caption_frame)
    video = with_audio(video, None, tmp_path / "captions-audio.mp4")
    chain = ["metadata", "scenes", "motion", "thumbnails", "faces", "fingerprint", "speech", "ocr"]
    home.config.write_text(home.config.read_text() + f"\nplugins = {json.dumps(chain)}\n")
    proc = home.start()
    home.drop(video, "news/captions.mp4")
    job = home.wait_status("news/captions.mp4", timeout=180)
    assert job["status"] == "completed" and job["progress"] == 100, (job, home.log_text()[-2000:])
    document = json.loads(home.cli("results", "news/captions.mp4", check=True).stdout)
    validator("results").validate(document)
    assert list(document["plugins"]) == chain
    sections = document["plugins"]
    assert abs(sections["scenes"]["scenes"][-1]["end_s"] - 4.0) < 0.2  # captions changing are no cut
    assert {t["text"].upper() for t in sections["ocr"]["texts"]} == {"HELLO FORGESYTE", "SECOND CAPTION 42",
                                                                      "WATCH FOLDER"}
    assert sections["speech"]["audio"] is True and sections["speech"]["segments"] == []
    assert len(sections["thumbnails"]["thumbnails"]) == 6 and sections["faces"]["max_count"] == 0
    assert sections["fingerprint"]["hashes"]
    assert home.stop(proc) == 0
