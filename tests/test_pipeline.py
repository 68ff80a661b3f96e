"""The shared decoding pass and the chain around it: one decode, faults stay local.

Plugins here are small real plugin objects; videos are real H.264 files.
"""

from __future__ import annotations

import errno
import json
import time

import numpy as np
import pytest

from forgesyte.plugins import chain as chain_module
from forgesyte.plugins.base import Audio, FramePlugin, Frames, Plugin, PluginError
from forgesyte.plugins.builtin.scenes import ScenesPlugin
from forgesyte.plugins.builtin.thumbnails import ThumbnailsPlugin
from forgesyte.plugins.chain import run_chain
from forgesyte.plugins.pipeline import Consumer, run_pass
from forgesyte.plugins.registry import PluginInfo
from forgesyte.storage.paths import Root
from forgesyte.storage.results import ResultStore
from tests.test_plugins_builtin import CUTS, ctx, shots_frame
from tests.videogen import VideoSpec, make_video


class Keeper(FramePlugin):
    """Keeps every frame object it is handed (to compare identities)."""

    def __init__(self, name="keeper", request=None, stop_after=None, fail_at=None, hold_s=0.0):
        self.name, self.request, self.stop_after, self.fail_at, self.hold_s = name, request, stop_after, fail_at, hold_s
        self.seen = []

    def wants(self, video, ctx):
        return self.request or Frames(width=32, format="gray")

    def analyze(self, video, frames, ctx):
        for frame in frames:
            if self.fail_at is not None and frame.index == self.fail_at:
                raise RuntimeError(f"broke at frame {frame.index}")
            self.seen.append(frame)
            _ = frame.array
            if self.hold_s:
                time.sleep(self.hold_s)
            if self.stop_after is not None and len(self.seen) >= self.stop_after:
                break
        return {"frames": len(self.seen), "times": [round(f.time_s, 3) for f in self.seen]}


@pytest.fixture(scope="module")
def cuts_video(tmp_path_factory):
    spec = VideoSpec(width=320, height=240, fps=25, seconds=8.0, audio=None)
    return make_video(tmp_path_factory.mktemp("pipeline") / "cuts.mp4", spec, shots_frame)


def consumers(tmp_path, *plugins):
    return [Consumer(p.name, p, ctx(tmp_path)) for p in plugins]


def test_every_plugin_gets_the_same_decoded_frames(cuts_video, tmp_path):
    a, b = Keeper("a"), Keeper("b", Frames(width=64, format="rgb24"))
    sampled = Keeper("sampled", Frames(fps=2, width=32, format="gray"))
    cs = consumers(tmp_path, a, b, sampled)
    stats = run_pass(cuts_video, cs, lambda f: None, lambda n: None)
    assert stats["mode"] == "dense" and stats["decoded"] == 200  # once, not three times
    assert all(c.error is None for c in cs)
    assert len(a.seen) == len(b.seen) == 200
    assert all(x.av is y.av for x, y in zip(a.seen, b.seen))  # the very same decoded frames
    # the first frame at or after each half second (frames are 40 ms apart)
    assert [round(f.time_s, 2) for f in sampled.seen] == [round(-(-i * 25 // 2) / 25, 2) for i in range(16)]
    assert a.seen[0].array.shape == (24, 32) and b.seen[0].array.shape == (48, 64, 3)


def test_scenes_in_a_shared_pass_finds_the_same_cuts(cuts_video, tmp_path):
    scenes = ScenesPlugin()
    c = ctx(tmp_path, threshold=10.0, min_scene_s=0.0)
    cs = [Consumer("scenes", scenes, c), *consumers(tmp_path, Keeper("a"), Keeper("b", Frames(fps=1)))]
    run_pass(cuts_video, cs, lambda f: None, lambda n: None)
    alone = ScenesPlugin().run(cuts_video, ctx(tmp_path))
    assert cs[0].section["cuts"] == alone["cuts"]
    assert [abs(a["frame"] - b) <= 1 for a, b in zip(alone["cuts"], CUTS)] == [True] * len(CUTS)


def test_only_sparse_wants_seek_instead_of_decoding_everything(tmp_path):
    spec = VideoSpec(width=320, height=240, fps=25, seconds=20.0, audio=None, gop=25)
    video = make_video(tmp_path / "long.mp4", spec, shots_frame)
    thumbs = ThumbnailsPlugin()
    c = ctx(tmp_path, count=4, width=64, format="jpg", quality=80, columns=2)
    cs = [Consumer("thumbnails", thumbs, c)]
    stats = run_pass(video, cs, lambda f: None, lambda n: None)
    assert cs[0].error is None, cs[0].error
    assert stats["mode"] == "sparse" and stats["seeks"] == 4 and stats["decoded"] <= 4 * 26, stats
    times = [t["time_s"] for t in cs[0].section["thumbnails"]]
    assert [round(t, 1) for t in times] == [2.5, 7.5, 12.5, 17.5]
    # The same frames as a full decode picks (the pass's dense mode).
    dense = [Consumer("thumbnails", ThumbnailsPlugin(), c), *consumers(tmp_path, Keeper())]
    run_pass(video, dense, lambda f: None, lambda n: None)
    assert [t["time_s"] for t in dense[0].section["thumbnails"]] == times


def test_a_long_gop_is_decoded_forward_not_seeked_again_and_again(tmp_path):
    spec = VideoSpec(width=160, height=120, fps=25, seconds=12.0, audio=None, gop=250)
    video = make_video(tmp_path / "longgop.mp4", spec, shots_frame)
    sampler = Keeper("s", Frames(fps=1, width=32, format="gray"))
    stats = run_pass(video, consumers(tmp_path, sampler), lambda f: None, lambda n: None)
    assert [round(f.time_s) for f in sampler.seen] == list(range(12))
    assert stats["decoded"] <= 300 + 30, stats  # about one pass, not a GOP per sample


def test_a_plugin_that_raises_or_stops_early_costs_only_itself(cuts_video, tmp_path):
    broken, quitter, steady = Keeper("broken", fail_at=30), Keeper("quitter", stop_after=5), Keeper("steady")
    cs = consumers(tmp_path, broken, quitter, steady)
    run_pass(cuts_video, cs, lambda f: None, lambda n: None)
    assert isinstance(cs[0].error, RuntimeError) and "frame 30" in str(cs[0].error)
    assert cs[1].error is None and cs[1].section["frames"] == 5
    assert cs[2].error is None and cs[2].section["frames"] == 200


def test_a_plugin_that_holds_a_frame_is_named(cuts_video, tmp_path):
    named = []
    slow = Keeper("slow", Frames(fps=0.5, width=32, format="gray"), hold_s=1.3, stop_after=2)
    run_pass(cuts_video, consumers(tmp_path, Keeper("fast"), slow), lambda f: None, named.append)
    assert named and set(named) == {"slow"}


def test_an_undecodable_file_fails_every_frame_plugin_with_one_sentence(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
    cs = consumers(tmp_path, Keeper("a"), Keeper("b"))
    run_pass(bad, cs, lambda f: None, lambda n: None)
    assert all(isinstance(c.error, PluginError) and "not a decodable video" in str(c.error) for c in cs)


def test_audio_is_resampled_for_the_plugins_that_ask(videos, tmp_path):
    class Listener(FramePlugin):
        name = "listener"

        def wants(self, video, ctx):
            return Audio(rate=8000, layout="mono")

        def analyze(self, video, chunks, ctx):
            samples = np.concatenate([c.samples[0] for c in chunks])
            return {"seconds": len(samples) / 8000, "rms": float(np.sqrt((samples ** 2).mean()))}

    cs = consumers(tmp_path, Listener(), Keeper())
    run_pass(videos["clip.mp4"], cs, lambda f: None, lambda n: None)  # 2 s with a 440 Hz tone at 0.1
    assert abs(cs[0].section["seconds"] - 2.0) < 0.1 and 0.05 < cs[0].section["rms"] < 0.15  # the downmix of two equal channels


# -- the chain -------------------------------------------------------------------

class Steps(Plugin):
    """A file plugin that reports progress in steps."""

    def __init__(self, name, cost):
        self.name, self.cost = name, cost

    def run(self, video, ctx):
        ctx.progress(0.5)
        return {"ok": True}


class DiskFull(Plugin):
    name = "diskfull"

    def run(self, video, ctx):
        path, _ = ctx.artifact("partial.bin")
        path.write_bytes(b"half an artifact")
        raise OSError(errno.ENOSPC, "No space left on device")


def chain_env(tmp_path, video):
    inbox, output = tmp_path / "inbox", tmp_path / "output"
    inbox.mkdir(exist_ok=True)
    output.mkdir(exist_ok=True)
    (inbox / "v.mp4").write_bytes(video.read_bytes())
    return Root(inbox), ResultStore(output)


def info(plugin):
    return PluginInfo(plugin.name, "1", "", plugin, None, "test")


def test_progress_is_weighted_by_cost_and_plugins_are_announced(videos, tmp_path, monkeypatch):
    monkeypatch.setattr(chain_module, "PROGRESS_EVERY", 0.0)
    inbox, results = chain_env(tmp_path, videos["clip.mp4"])
    plugins = {"heavy": info(Steps("heavy", 3.0)), "light": info(Steps("light", 1.0))}
    sent = []
    task = {"job_id": "j", "input": "v.mp4", "folder": "v.mp4-j", "plugins": ["heavy", "light"], "options": {}}
    outcome = run_chain(task, plugins, inbox, results, sent.append)
    assert outcome["status"] == "completed"
    assert [m[2] for m in sent if m[0] == "progress"] == [37, 87]  # 1.5 of 4, then 3.5 of 4
    assert [m[2] for m in sent if m[0] == "plugin"][-2:] == ["heavy", "light"]


def test_a_full_disk_propagates_and_leaves_no_partial_artifact(videos, tmp_path):
    inbox, results = chain_env(tmp_path, videos["clip.mp4"])
    task = {"job_id": "j", "input": "v.mp4", "folder": "v.mp4-j", "plugins": ["diskfull"], "options": {}}
    with pytest.raises(OSError) as caught:
        run_chain(task, {"diskfull": info(DiskFull())}, inbox, results, lambda m: None)
    assert caught.value.errno == errno.ENOSPC
    assert not (tmp_path / "output" / "v.mp4-j" / "diskfull").exists()
    assert not (tmp_path / "output" / "v.mp4-j" / "results.json").exists()


def test_a_full_disk_inside_the_shared_pass_propagates_too(videos, tmp_path):
    class Writer(Keeper):
        def analyze(self, video, frames, ctx):
            for _ in frames:
                path, _ = ctx.artifact("frame.bin")
                path.write_bytes(b"x")
                raise OSError(errno.EDQUOT, "Disk quota exceeded")

    inbox, results = chain_env(tmp_path, videos["clip.mp4"])
    task = {"job_id": "j", "input": "v.mp4", "folder": "v.mp4-j", "plugins": ["keeper", "writer"], "options": {}}
    plugins = {"keeper": info(Keeper()), "writer": info(Writer("writer"))}
    with pytest.raises(OSError) as caught:
        run_chain(task, plugins, inbox, results, lambda m: None)
    assert caught.value.errno == errno.EDQUOT
    assert not (tmp_path / "output" / "v.mp4-j" / "writer").exists()


def test_in_a_shared_pass_the_first_failure_in_chain_order_is_the_job_error(videos, tmp_path):
    inbox, results = chain_env(tmp_path, videos["clip.mp4"])
    plugins = {"ok": info(Keeper("ok")), "late": info(Keeper("late", fail_at=40)),
               "early": info(Keeper("early", fail_at=3))}
    task = {"job_id": "j", "input": "v.mp4", "folder": "v.mp4-j", "plugins": ["ok", "late", "early"],
            "options": {}}
    outcome = run_chain(task, plugins, inbox, results, lambda m: None)
    assert outcome["error"] == "Plugin 'late' crashed: RuntimeError: broke at frame 40."
    document = json.loads((tmp_path / "output" / outcome["output"]).read_text())
    assert document["plugins"]["ok"]["frames"] == 50  # the plugin that finished keeps its section
    assert list(document["plugins"]) == ["ok", "late", "early"]


def test_a_bad_request_fails_only_the_plugin_that_made_it(cuts_video, tmp_path):
    zero = Keeper("zero", Frames(fps=0))

    class Odd(Keeper):
        def wants(self, video, ctx):
            return "every frame please"

    cs = consumers(tmp_path, zero, Odd("odd"), Keeper("fine"))
    run_pass(cuts_video, cs, lambda f: None, lambda n: None)
    assert "asked for 0 frames a second" in str(cs[0].error)
    assert "returned str, not Frames, Audio or None" in str(cs[1].error)
    assert cs[2].error is None and cs[2].section["frames"] == 200


def test_a_shared_pass_announces_its_plugins_when_it_starts(videos, tmp_path, monkeypatch):
    monkeypatch.setattr(chain_module, "PROGRESS_EVERY", 0.0)
    inbox, results = chain_env(tmp_path, videos["clip.mp4"])
    plugins = {"file": info(Steps("file", 1.0)), "a": info(Keeper("a")), "b": info(Keeper("b"))}
    sent = []
    task = {"job_id": "j", "input": "v.mp4", "folder": "v.mp4-j", "plugins": ["file", "a", "b"], "options": {}}
    assert run_chain(task, plugins, inbox, results, sent.append)["status"] == "completed"
    after_load = sent[3:]  # the first three name each plugin as it is loaded
    assert [m[2] for m in after_load if m[0] == "plugin"] == ["file", "a", "b"]
    percents = [m[2] for m in after_load if m[0] == "progress"]
    assert percents == sorted(percents) and percents[0] < 50 <= percents[-1] < 100


# -- generated requests: seeking picks exactly the frames decoding everything picks ---------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SMALL = VideoSpec(width=160, height=120, fps=25, seconds=3.0, audio=None, gop=12)


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("small") / "small.mp4", SMALL, shots_frame)


def expected_times(targets: list[float]) -> list[float]:
    """The frames a `times` request should get, from the frame grid alone."""
    grid = [i / SMALL.fps for i in range(SMALL.frames)]
    picked: list[float] = []
    for target in sorted(targets):
        if picked and picked[-1] >= target - 1e-6:
            continue  # the frame already delivered covers this time too
        later = [t for t in grid if t >= target - 1e-6]
        chosen = later[0] if later else grid[-1]  # past the end: the last frame, once
        if not picked or chosen != picked[-1]:
            picked.append(chosen)
    return [round(t, 3) for t in picked]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(targets=st.lists(st.floats(0, 3.5), min_size=1, max_size=8), fps=st.none() | st.floats(0.2, 30))
def test_seeking_and_decoding_everything_deliver_the_same_frames(small_video, tmp_path, targets, fps):
    def keepers():
        return [Keeper("times", Frames(times=targets, width=32, format="gray")),
                *([Keeper("rate", Frames(fps=fps, width=32, format="gray"))] if fps else [])]

    sparse = keepers()
    sparse_stats = run_pass(small_video, consumers(tmp_path, *sparse), lambda f: None, lambda n: None)
    dense = keepers()
    run_pass(small_video, consumers(tmp_path, *dense, Keeper("all")), lambda f: None, lambda n: None)
    assert sparse_stats["mode"] == "sparse"
    for a, b in zip(sparse, dense):
        assert [round(f.time_s, 3) for f in a.seen] == [round(f.time_s, 3) for f in b.seen], a.name
    assert [round(f.time_s, 3) for f in sparse[0].seen] == expected_times(targets)
