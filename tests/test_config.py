"""Settings: absolute paths, precedence flags > env > file > defaults, clear errors (exit 2)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from forgesyte.config import ConfigError, load_settings, prepare_directories
from tests.conftest import base_env, write_config


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
