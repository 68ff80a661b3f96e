"""`service install`: the units it writes (daemon, worker), checked as text and by systemd-analyze.

make test-systemd runs these units under a real systemd; these tests keep
each promise about their text cheap to check on every run.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forgesyte.daemon.unit import UnitError, allowed_addresses

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- `service install` as root (issue 11 item 2)

def _install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`forgesyte ARGS` as a root shell would run it: HOME=/root, no FORGESYTE_* in the environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FORGESYTE_", "XDG_", "STATE_DIRECTORY"))}
    base.update({"HOME": "/root", **(env or {})})
    return subprocess.run([sys.executable, "-m", "forgesyte", *args], env=base, capture_output=True, text=True, check=False,
                          timeout=60)


def _unit(tmp_path: Path, *args: str, env: dict[str, str] | None = None, name: str = "forgesyte.service") -> str:
    folder = tmp_path / f"units-{len(list(tmp_path.glob('units-*')))}"
    proc = _install(*args, "--unit-dir", str(folder), env=env)
    assert proc.returncode == 0, proc.stderr
    return (folder / name).read_text()


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_root_install_puts_unnamed_dirs_next_to_the_inbox_not_root_home(tmp_path):
    """The README's own command once wrote /root/.local/share/... into the unit (exit 2 at start).
    With the inbox named and no home, output and state go next to the inbox."""
    folder = tmp_path / "units"
    proc = _install("--inbox", "/srv/videos/inbox", "service", "install", "--unit-dir", str(folder))
    assert proc.returncode == 0, proc.stderr
    unit = (folder / "forgesyte.service").read_text()
    assert "/root" not in unit and "/root" not in proc.stdout
    lines = _lines(unit)
    assert "Environment=FORGESYTE_HOME=/srv/videos" in lines
    assert not any(line.startswith(("Environment=FORGESYTE_INBOX", "Environment=FORGESYTE_OUTPUT",
                                    "Environment=FORGESYTE_STATE")) for line in lines)
    assert "StateDirectory=forgesyte" not in lines
    assert "RequiresMountsFor=/srv/videos/inbox /srv/videos/output /srv/videos/state" in lines
    assert "mkdir -p /srv/videos/inbox /srv/videos/output /srv/videos/state" in proc.stdout


def test_root_install_with_nothing_named_uses_the_state_directory(tmp_path):
    unit = _unit(tmp_path, "service", "install")
    lines = _lines(unit)
    assert "Environment=FORGESYTE_HOME=/var/lib/forgesyte" in lines and "StateDirectory=forgesyte" in lines
    assert "RequiresMountsFor=/var/lib/forgesyte/inbox /var/lib/forgesyte/output /var/lib/forgesyte/state" in lines
    # A named home wins over the inbox's parent.
    unit = _unit(tmp_path, "--home", "/var/lib/forgesyte", "--inbox", "/srv/videos/inbox", "service", "install")
    assert "Environment=FORGESYTE_HOME=/var/lib/forgesyte" in _lines(unit)
    assert "Environment=FORGESYTE_INBOX=/srv/videos/inbox" in _lines(unit)


def test_install_keeps_the_home_the_user_named(tmp_path):
    unit = _unit(tmp_path, "--home", "/srv/fs", "service", "install")
    assert "Environment=FORGESYTE_HOME=/srv/fs" in _lines(unit) and "StateDirectory=forgesyte" not in unit
    unit = _unit(tmp_path, "service", "install", env={"FORGESYTE_HOME": "/data/fs"})
    assert "RequiresMountsFor=/data/fs/inbox /data/fs/output /data/fs/state" in _lines(unit)
    config = tmp_path / "fs.toml"
    config.write_text('home = "/data/cfg"\noutput = "/data/out"\n')
    unit = _unit(tmp_path, "--config", str(config), "service", "install")
    assert "RequiresMountsFor=/data/cfg/inbox /data/out /data/cfg/state" in _lines(unit)
    assert f"Environment=FORGESYTE_CONFIG={config}" in _lines(unit)
    # A user unit keeps the user's own data home.
    user = _install("service", "install", "--user", "--print", env={"HOME": str(tmp_path)})
    assert f"Environment=FORGESYTE_HOME={tmp_path}/.local/share/forgesyte" in _lines(user.stdout)
    assert "StateDirectory" not in user.stdout and "User=" not in user.stdout


def test_units_log_as_forgesyte_and_do_not_restart_on_exit_2_or_3(tmp_path):
    unit = _lines(_unit(tmp_path, "--inbox", "/srv/in", "service", "install"))
    assert "SyslogIdentifier=forgesyte" in unit and "RestartPreventExitStatus=2 3" in unit


def test_unit_files_are_world_readable_whatever_the_umask(tmp_path):
    """systemd warns about a world-inaccessible unit file; a root umask of 077 made one."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FORGESYTE_")}
    for extra in ([], ["--worker", "--scheduler", "127.0.0.1:8786"]):
        proc = subprocess.run([sys.executable, "-m", "forgesyte", "--home", "/srv/fs", "service", "install",
                               "--unit-dir", str(tmp_path), *extra], env=base, capture_output=True, text=True,
                              umask=0o077, check=False, timeout=60)
        assert proc.returncode == 0, proc.stderr
    for name in ("forgesyte.service", "forgesyte-worker.service"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("home_dir, private_tmp", [
    ("/tmp/fs", False), ("/var/tmp/x/fs", False), ("/srv/tmp", True), ("/tmpfoo/fs", True), ("/var/lib/fs", True),
])
def test_private_tmp_only_when_no_directory_is_under_tmp(tmp_path, home_dir, private_tmp):
    """A private /tmp would hide an inbox under /tmp from the daemon."""
    unit = _lines(_unit(tmp_path, "--home", home_dir, "service", "install"))
    assert ("PrivateTmp=yes" in unit) is private_tmp
    unit = _lines(_unit(tmp_path, "--home", "/srv/fs", "--output", home_dir, "service", "install"))
    assert ("PrivateTmp=yes" in unit) is private_tmp


# ---------------------------------------------------------------- cluster units (issue 13 item 5)

def test_worker_unit_runs_forgesyte_worker_with_the_network_opened_to_the_cluster_only(tmp_path):
    unit = _unit(tmp_path, "--inbox", "/mnt/v/inbox", "--output", "/mnt/v/output", "service", "install", "--worker",
                 "--scheduler", "10.0.0.5:8786", "--allow", "10.0.0.0/24", "--allow", "fd00::1",
                 name="forgesyte-worker.service")
    lines = _lines(unit)
    assert any(line.startswith("ExecStart=") and line.endswith(" -m forgesyte worker --scheduler tcp://10.0.0.5:8786")
               for line in lines)
    assert "RequiresMountsFor=/mnt/v/inbox /mnt/v/output" in lines
    assert "ReadWritePaths=-/mnt/v/output" in lines
    # Both folders sit where the home (the inbox's parent) puts them: the home says it all.
    assert "Environment=FORGESYTE_HOME=/mnt/v" in lines
    assert "PrivateNetwork=no" in lines and "PrivateNetwork=yes" not in lines
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in lines
    assert "IPAddressDeny=any" in lines and "IPAddressAllow=localhost 10.0.0.5 10.0.0.0/24 fd00::1/128" in lines
    daemon = _lines(_unit(tmp_path, "--inbox", "/srv/in", "service", "install"))
    same = {"ProtectSystem=strict", "PrivateUsers=yes", "NoNewPrivileges=yes", "SystemCallFilter=@system-service",
            "CapabilityBoundingSet=", "User=forgesyte", "PrivateTmp=yes", "PrivateDevices=yes", "ProtectHome=yes"}
    assert same <= set(lines) and same <= set(daemon)
    _verify(unit, tmp_path, "forgesyte-worker.service")


def test_daemon_unit_opens_the_network_only_with_a_scheduler(tmp_path):
    plain = _lines(_unit(tmp_path, "--inbox", "/srv/in", "service", "install"))
    assert "PrivateNetwork=yes" in plain and "RestrictAddressFamilies=AF_UNIX" in plain
    assert not any(line.startswith("IPAddressAllow") for line in plain)
    refused = _install("--inbox", "/srv/in", "service", "install", "--print", "--allow", "10.0.0.0/24")
    assert refused.returncode == 1 and "without a scheduler" in refused.stderr
    unit = _unit(tmp_path, "--inbox", "/srv/in", "service", "install", env={"FORGESYTE_SCHEDULER": "tcp://192.168.7.2:8786"})
    lines = _lines(unit)
    assert "Environment=FORGESYTE_SCHEDULER=tcp://192.168.7.2:8786" in lines
    assert "PrivateNetwork=no" in lines and "IPAddressAllow=localhost 192.168.7.2" in lines
    assert "Wants=network-online.target" in lines
    _verify(unit, tmp_path, "forgesyte.service")


@pytest.mark.parametrize("args, says", [
    (["--worker"], "needs the scheduler's address"),
    (["--worker", "--scheduler", "sched.lan:8786"], "named by host name"),
    (["--worker", "--scheduler", "tcp://10.0.0.5:8786", "--allow", "10.0.0.0/33"], "is not an address or network"),
    (["--worker", "--scheduler", "tcp://10.0.0.5"], "must be an address like"),
])
def test_cluster_unit_mistakes_are_one_sentence(args, says):
    proc = _install("service", "install", "--print", *args)
    assert proc.returncode in (1, 2) and says in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_scheduler_named_by_host_takes_its_addresses_from_allow(tmp_path):
    unit = _unit(tmp_path, "service", "install", "--worker", "--scheduler", "sched.lan:8786", "--allow", "10.1.0.0/16",
                 name="forgesyte-worker.service")
    assert "IPAddressAllow=localhost 10.1.0.0/16" in _lines(unit)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=20), max_size=4))
def test_allow_values_are_checked_before_they_reach_a_unit(values):
    """Whatever the user types, either one UnitError sentence or values systemd can parse."""
    try:
        out = allowed_addresses("tcp://10.0.0.5:8786", values)
    except UnitError as exc:
        assert str(exc).endswith(".") and "\\n" not in str(exc)
        return
    for value in out:
        assert value in ("localhost", "any", "link-local", "multicast") or ipaddress.ip_network(value)
        assert value.isprintable() and " " not in value


def _verify(unit: str, tmp_path: Path, name: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the text checks above still ran; make test-systemd runs the units for real
    path = tmp_path / "verify" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(unit)
    proc = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_readme_systemd_steps_are_what_service_install_prints():
    """make test-systemd runs the README's marked blocks; here they must match the real command's output."""
    sys.path.insert(0, str(REPO / "tests" / "systemd"))
    from readme_steps import steps, without_comment

    blocks = steps((REPO / "README.md").read_text())
    assert {"install", "account", "use"} <= set(blocks)
    assert "sudo forgesyte --inbox /srv/videos/inbox service install" in blocks["install"]
    folder = Path(tempfile.mkdtemp())
    try:
        printed = _install("--inbox", "/srv/videos/inbox", "service", "install", "--unit-dir", str(folder))
    finally:
        shutil.rmtree(folder)
    assert printed.returncode == 0, printed.stderr
    told = [line.strip() for line in printed.stdout.splitlines() if line.startswith("  ")]
    told = [line for line in told if not line.startswith("journalctl")] + ["journalctl -u forgesyte -f"]
    readme = [" ".join(without_comment(c).replace("sudo ", "").split()) for c in blocks["account"]]
    assert sorted(readme) == sorted(told)
