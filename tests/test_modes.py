"""Everything the daemon and the CLI create under output/ and state/ is 0750 (folders) /
0640 (files), whatever the umask they were started with (issue 9, item 8); and error
texts that are stored hold keys, never absolute paths of this machine."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import register_test_plugin

PLUGIN = '''
class Artist:
    name = "artist"

    def run(self, video, ctx):
        path, key = ctx.artifact("frames/first.txt")  # a sub-folder, as thumbnails make
        with open(path, "w") as fh:  # plain open(): the mode comes from the umask
            fh.write("a frame")
        return {"ok": True}
'''


def _modes(top: Path) -> dict[str, str]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                continue
            found[os.path.relpath(path, top.parent)] = oct(stat.S_IMODE(st.st_mode))
    return found


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_output_and_state_modes_whatever_the_umask(home, videos, tmp_path, umask):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "artist_plugin.py").write_text(PLUGIN)
    register_test_plugin(home, folder, "artist", "artist_plugin:Artist")
    home.config.write_text('settle_seconds = 0.3\nscan_interval = 60\nstop_grace = 0.5\n'
                           'plugins = ["metadata", "artist"]\n')
    previous = os.umask(umask)  # inherited by every process the test starts
    try:
        proc = home.start()
        home.drop(videos["clip.mp4"], "cam1/a.mp4")
        (home.inbox / "bad.mp4").write_bytes(b"not a video at all")
        for ref in ("cam1/a.mp4", "bad.mp4"):
            home.wait_status(ref)
        home.cli("retry", "bad.mp4", check=True)  # the CLI writes a request into state/ (mailbox)
        assert home.stop(proc) == 0
        home.cli("retry", "bad.mp4")  # no daemon: the CLI writes the store itself
    finally:
        os.umask(previous)
    modes = {**_modes(home.output), **_modes(home.state)}
    assert any(path.endswith("first.txt") for path in modes), modes
    wrong = {path: mode for path, mode in modes.items()
             if mode != ("0o750" if os.path.isdir(home.root / path) else "0o640")}
    assert not wrong, wrong


LEAKY = '''
class Leaky:
    name = "leaky"

    def run(self, video, ctx):
        if "long" in video.name:  # Errno 36 in the output folder
            path, key = ctx.artifact("n" * 300 + ".jpg")
            open(path, "w").close()
        open(video.with_suffix(".srt"))  # Errno 2 naming a path in the inbox
'''


def test_stored_errors_hold_keys_not_absolute_paths(home, videos, tmp_path):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "leaky_plugin.py").write_text(LEAKY)
    register_test_plugin(home, folder, "leaky", "leaky_plugin:Leaky")
    home.config.write_text('settle_seconds = 0.3\nscan_interval = 60\nstop_grace = 0.5\nplugins = ["leaky"]\n')
    proc = home.start()
    home.drop(videos["clip.mp4"], "cam1/subs.mp4")
    home.drop(videos["clip.mkv"], "cam1/long.mkv")
    roots = (str(home.root), os.path.realpath(home.root))
    for ref, errno_text in (("cam1/subs.mp4", "No such file or directory: 'cam1/subs.srt'"),
                            ("cam1/long.mkv", "File name too long: '")):
        job = home.wait_status(ref)
        assert job["status"] == "failed" and errno_text in job["error"], job
        assert not any(root in job["error"] for root in roots), job
        document = (home.output / job["output"]).read_text()
        assert not any(root in document for root in roots)
    assert home.stop(proc) == 0
