"""Settings: absolute paths, precedence flags > env > file > defaults, clear errors (exit 2)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forgesyte.config import ConfigError, load_settings, match_key, prepare_directories
from tests.conftest import base_env, register_test_plugin, wait_until, write_config


def test_default_home_order(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert load_settings({}, env).home == tmp_path / ".local/share/forgesyte"
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    assert load_settings({}, env).home == tmp_path / "xdg/forgesyte"
    env["STATE_DIRECTORY"] = str(tmp_path / "sd") + ":" + str(tmp_path / "other")
    assert load_settings({}, env).home == tmp_path / "sd"
    env["FORGESYTE_HOME"] = str(tmp_path / "fh")
    s = load_settings({}, env)
    assert s.home == tmp_path / "fh"
    assert (s.inbox, s.output, s.state) == (tmp_path / "fh/inbox", tmp_path / "fh/output", tmp_path / "fh/state")


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings({"home": "h", "inbox": "in"}, {})
    assert s.home == tmp_path / "h" and s.inbox == tmp_path / "in"
    assert all(p.is_absolute() for p in (s.home, s.inbox, s.output, s.state))


def test_precedence_flag_env_file_default(tmp_path):
    cfg = write_config(tmp_path, workers=3, inbox=str(tmp_path / "file-inbox"), settle_seconds=1.5)
    env = {"FORGESYTE_HOME": str(tmp_path / "h"), "FORGESYTE_CONFIG": str(cfg)}
    s = load_settings({}, env)
    assert s.workers == 3 and s.inbox == tmp_path / "file-inbox" and s.settle_seconds == 1.5
    env["FORGESYTE_INBOX"] = str(tmp_path / "env-inbox")
    env["FORGESYTE_WORKERS"] = "4"
    s = load_settings({}, env)
    assert s.workers == 4 and s.inbox == tmp_path / "env-inbox"
    s = load_settings({"inbox": tmp_path / "flag-inbox", "workers": 5}, env)
    assert s.workers == 5 and s.inbox == tmp_path / "flag-inbox"
    assert s.output == tmp_path / "h/output"  # untouched settings keep the default


@pytest.mark.parametrize("body, fragment", [
    ("workers = 0\n", "at least 1"),
    ("workers = 'many'\n", "must be a number"),
    ("colour = 'blue'\n", "Unknown setting 'colour'"),
    ("not toml [[[\n", "not valid TOML"),
])
def test_bad_config_file_is_one_sentence(tmp_path, body, fragment):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError, match=fragment):
        load_settings({"config": cfg}, {"FORGESYTE_HOME": str(tmp_path)})


def test_directories_created_0750(tmp_path):
    s = load_settings({"home": tmp_path / "new"}, {})
    prepare_directories(s)
    for path in (s.inbox, s.output, s.state):
        assert path.is_dir()
        assert stat.S_IMODE(path.stat().st_mode) & 0o777 == 0o750 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _run(env, *args):
    return subprocess.run([sys.executable, "-m", "forgesyte", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_inbox_that_is_a_file_exits_2_with_a_sentence(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "inbox").write_text("oops")
    proc = _run(base_env(home), "run", "--once")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"The inbox path {home / 'inbox'} exists but is not a directory."


def test_uncreatable_directory_exits_2(tmp_path):
    # /proc refuses new directories even for root, so this is a real failure to create.
    proc = _run(base_env(tmp_path), "--state", "/proc/forgesyte-state", "run", "--once")
    assert proc.returncode == 2
    assert "Cannot create the state directory /proc/forgesyte-state" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unwritable_directory_exits_2(tmp_path):
    if os.geteuid() == 0:
        # root writes anywhere by permission bits; a read-only bind is not available
        # unprivileged, so use a read-only filesystem that exists on every Linux: /sys.
        target = "/sys/kernel"
    else:
        target = tmp_path / "ro"
        target.mkdir(mode=0o500)
    proc = _run(base_env(tmp_path), "--output", str(target), "run", "--once")
    assert proc.returncode == 2, proc.stderr
    assert "not writable" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unknown_plugin_is_bad_configuration(tmp_path):
    proc = _run(base_env(tmp_path), "run", "--once", "--plugins", "metadata,nope")
    assert proc.returncode == 2
    assert proc.stderr.startswith("Unknown plugin 'nope'")


def test_scheduler_setting_from_flag_env_and_file(tmp_path):
    """`scheduler` is parsed and normalised at start (helper F's executor uses it)."""
    env = {"FORGESYTE_HOME": str(tmp_path)}
    assert load_settings({}, env).scheduler is None
    cfg = write_config(tmp_path, scheduler="tcp://10.0.0.5:8786")
    assert load_settings({"config": cfg}, env).scheduler == "tcp://10.0.0.5:8786"
    env["FORGESYTE_SCHEDULER"] = "sched.local:8786"  # bare host:port means tcp
    assert load_settings({"config": cfg}, env).scheduler == "tcp://sched.local:8786"
    flagged = load_settings({"config": cfg, "scheduler": "tls://[::1]:9000"}, env)
    assert flagged.scheduler == "tls://[::1]:9000"


@pytest.mark.parametrize("address", ["tcp://", "tcp://host", "http://h:1", "tcp://h:0",
                                     "tcp://h:99999", "tcp://h:port", "tcp://a/b:1", 8786])
def test_bad_scheduler_address_is_one_sentence(tmp_path, address):
    cfg = write_config(tmp_path, scheduler=address)
    with pytest.raises(ConfigError, match=r"Setting 'scheduler' in .*forgesyte.toml must be an address like tcp://host:8786"):
        load_settings({"config": cfg}, {"FORGESYTE_HOME": str(tmp_path)})


def test_run_refuses_a_bad_scheduler_flag(tmp_path):
    proc = _run(base_env(tmp_path), "run", "--once", "--scheduler", "tcp://nohost")
    assert proc.returncode == 2
    assert proc.stderr.startswith("Setting 'scheduler' (from --scheduler) must be an address") and proc.stderr.count("\n") == 1


# -- every setting error names the setting and where its value came from ---------------------

@pytest.mark.parametrize("body, message", [
    ('retention = "30 days"\n',
     "Setting 'retention' in {cfg}: '30 days' is not a duration; use a number with s, m, h, d or w, e.g. 30d."),
    ('retension = "30d"\n', "Unknown setting 'retension' in {cfg}; did you mean 'retention'?"),
    ("workers = 2.5\n", "Setting 'workers' in {cfg} must be a whole number, not 2.5."),
    ('polling = "sometimes"\n', "Setting 'polling' in {cfg} must be true or false, not 'sometimes'."),
    ("[plugins.scenes]\nthreshold = 5\n",
     "Setting 'plugins' in {cfg} must be a list of strings, not {{'scenes': {{'threshold': 5}}}}."),
    ("[plugn.scenes]\nthreshold = 5\n", "Unknown table 'plugn' in {cfg}; did you mean 'plugin'?"),
    ('[[rules]]\nmatch = "a/*"\nplugins = ["metadata"]\nplugin = ["x"]\n',
     "Unknown key of rule 1 'plugin' in {cfg}; did you mean 'plugins'?"),
])
def test_setting_errors_name_the_setting_and_the_file(tmp_path, body, message):
    cfg = tmp_path / "forgesyte.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_settings({"config": cfg}, {"FORGESYTE_HOME": str(tmp_path)})
    assert str(info.value) == message.format(cfg=cfg)


def test_environment_and_flag_errors_say_so(tmp_path):
    with pytest.raises(ConfigError, match=r"^Setting 'workers' \(from FORGESYTE_WORKERS\) must be a number, not 'many'\.$"):
        load_settings({}, {"FORGESYTE_HOME": str(tmp_path), "FORGESYTE_WORKERS": "many"})
    cfg = write_config(tmp_path, retention="30 days")
    proc = _run(base_env(tmp_path, cfg), "run", "--once")
    assert proc.returncode == 2
    assert proc.stderr == f"Setting 'retention' in {cfg}: '30 days' is not a duration; use a number with s, m, h, d or w, e.g. 30d.\n"
    doctor = _run(base_env(tmp_path, cfg), "doctor")
    assert doctor.returncode == 1
    assert doctor.stdout.startswith(f"[FAIL] Setting 'retention' in {cfg}: '30 days' is not a duration")


# -- rules: `*` stays inside one folder, `**` crosses folders -----------------------------------

def test_rule_globs_are_per_folder(tmp_path):
    cfg = tmp_path / "forgesyte.toml"
    cfg.write_text('[[rules]]\nmatch = "cameras/*"\nplugins = ["motion"]\n'
                   '[[rules]]\nmatch = "cameras/**"\nplugins = ["scenes"]\n'
                   '[[rules]]\nmatch = "**/*.mkv"\nplugins = ["thumbnails"]\n')
    settings = load_settings({"config": cfg}, {"FORGESYTE_HOME": str(tmp_path)})
    chain = lambda key: settings.chain_for(key)[0]  # noqa: E731
    assert chain("cameras/x.mkv") == ("motion",)
    assert chain("cameras/front/x.mkv") == ("scenes",)  # `*` does not reach into cameras/front/
    assert chain("other/deep/y.mkv") == ("thumbnails",) and chain("y.mkv") == ("thumbnails",)
    assert chain("other/y.mp4") == ("metadata",)


# Parts without `**` (which crosses folders on purpose and is tested above).
_PART = st.text(alphabet="ab.*?", min_size=1, max_size=4).filter(lambda part: "**" not in part)


@given(st.lists(_PART, min_size=1, max_size=3), st.lists(st.text(alphabet="ab.", min_size=1, max_size=4),
                                                      min_size=1, max_size=3))
def test_star_matches_like_fnmatch_within_each_folder(pattern_parts, key_parts):
    """Without `**`, a rule matches exactly when the key has as many folders as the pattern
    and each part matches fnmatch's way (a reference that cannot cross `/`)."""
    pattern, key = "/".join(pattern_parts), "/".join(key_parts)
    expected = len(pattern_parts) == len(key_parts) and all(
        fnmatchcase(k, p) for p, k in zip(pattern_parts, key_parts))
    assert match_key(pattern, key) == expected


# -- paths: a config file's relative paths are relative to that file ---------------------------

def test_relative_paths_in_the_file_resolve_against_its_folder(tmp_path, monkeypatch):
    conf = tmp_path / "etc"
    conf.mkdir()
    cfg = conf / "forgesyte.toml"
    cfg.write_text('inbox = "../videos"\nstate = "state"\nhome = "h"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings({"config": "../etc/forgesyte.toml"}, {})
    assert settings.inbox == tmp_path / "videos" and settings.state == conf / "state"
    assert settings.home == conf / "h" and settings.output == conf / "h" / "output"
    # Flags and the environment are relative to where the command runs.
    flagged = load_settings({"config": cfg, "inbox": "in"}, {"FORGESYTE_OUTPUT": "out"})
    assert flagged.inbox == elsewhere / "in" and flagged.output == elsewhere / "out"


@pytest.mark.parametrize("flags, fragment", [
    ({"output": "{inbox}"}, "are the same folder"),
    ({"output": "{inbox}/results"}, "The output folder {inbox}/results lies inside the inbox folder {inbox}"),
    ({"state": "{inbox}/.state"}, "lies inside the inbox folder"),
    ({"inbox": "{home}/output/in"}, "The inbox folder {home}/output/in lies inside the output folder"),
])
def test_inbox_must_not_share_or_nest_with_output_or_state(tmp_path, flags, fragment):
    values = {"home": tmp_path, "inbox": tmp_path / "inbox"}
    flags = {k: v.format(inbox=values["inbox"], home=tmp_path) for k, v in flags.items()}
    with pytest.raises(ConfigError) as info:
        load_settings({"home": tmp_path, "inbox": values["inbox"], **flags}, {})
    assert fragment.format(inbox=values["inbox"], home=tmp_path) in str(info.value)


def test_run_refuses_an_output_inside_the_inbox(tmp_path):
    proc = _run(base_env(tmp_path), "--output", str(tmp_path / "inbox" / "out"), "run", "--once")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "lies inside the inbox" in proc.stderr
    assert not (tmp_path / "inbox").exists()


# -- plugin options: checked at run, by doctor and on reload -------------------------------------

TUNABLE = '''
from forgesyte.plugins.base import Option

class Tunable:
    name = "tunable"
    version = "1"
    description = "declares options (tests)"
    options = {"threshold": Option(float, 10.0, min=0, max=100),
               "format": Option(str, "jpg", choices=("jpg", "webp"))}

    def run(self, video, ctx):
        return {"options": dict(ctx.options)}
'''


@pytest.fixture
def tunable(home, tmp_path):
    folder = tmp_path / "tunable"
    folder.mkdir()
    (folder / "tunable_plugin.py").write_text(TUNABLE)
    register_test_plugin(home, folder, "tunable", "tunable_plugin:Tunable")
    base = home.config.read_text() + 'plugins = ["metadata", "tunable"]\n'

    def configure(tables: str) -> None:
        home.config.write_text(base + tables)
    return configure


def test_plugin_options_are_checked_before_anything_runs(home, tunable):
    cfg = home.config
    tunable("[plugin.tunable]\nthreshhold = 5\n")
    proc = home.cli("run", "--once")
    assert proc.returncode == 2
    assert proc.stderr == f"Unknown option 'threshhold' in [plugin.tunable] in {cfg}; did you mean 'threshold'?\n"
    assert not home.inbox.exists() and not home.state.exists()  # a refused configuration creates nothing

    tunable('[plugin.tunable]\nformat = "gif"\nthreshold = 500\n'
            '[[rules]]\nmatch = "cam/*"\nplugins = ["tunabel"]\n')
    proc = home.cli("run", "--once")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.endswith("(and 2 more problems: `forgesyte doctor` lists them)\n")
    doctor = home.cli("doctor")
    assert doctor.returncode == 1
    for problem in (f"[FAIL] Option 'format' in [plugin.tunable] in {cfg} must be one of 'jpg', 'webp', not 'gif'.",
                    f"[FAIL] Option 'threshold' in [plugin.tunable] in {cfg} must be between 0 and 100, not 500.",
                    f"[FAIL] Unknown plugin 'tunabel' in rule 1 (match 'cam/*') in {cfg}; did you mean 'tunable'?"):
        assert problem in doctor.stdout, doctor.stdout


def test_a_bad_reload_keeps_the_running_configuration(home, tunable, videos):
    tunable("[plugin.tunable]\nthreshold = 20\n")
    proc = home.start()
    tunable("[plugin.tunable]\nthreshhold = 30\n")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload failed, keeping the running configuration: Unknown option 'threshhold'"
               in home.log_text(), 30, "the reload to be refused")
    home.drop(videos["clip.mp4"], "a.mp4")
    home.wait_status("a.mp4")
    results = json.loads(home.cli("results", "a.mp4", "--plugin", "tunable", check=True).stdout)
    assert results["options"]["threshold"] == 20
    tunable("[plugin.tunable]\nthreshold = 40\n")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in home.log_text(), 30, "the good reload")
    home.drop(videos["clip.webm"], "b.webm")
    home.wait_status("b.webm")
    results = json.loads(home.cli("results", "b.webm", "--plugin", "tunable", check=True).stdout)
    assert results["options"]["threshold"] == 40
    assert home.stop(proc) == 0
