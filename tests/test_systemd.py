"""systemd integration with a real daemon: sd_notify, watchdog, stop, reload, journald, the unit."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgesyte.config import load_settings
from forgesyte.daemon.unit import render
from tests.conftest import wait_until
from tests.test_plugin_isolation import setup_plugins

REPO = Path(__file__).resolve().parent.parent


class NotifyListener:
    """A fake systemd: an AF_UNIX datagram socket collecting sd_notify messages."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.path = path
        self.messages: list[dict[str, str]] = []

    def collect(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(65536).decode()
            except (socket.timeout, BlockingIOError):
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))

    def seen(self, key: str, value: str = "1") -> list[dict[str, str]]:
        return [m for m in self.collect() if m.get(key) == value]


@pytest.fixture
def notify(tmp_path):
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.sock.close()


def with_env(home, **extra):
    home.extra_env.update(extra)


def test_ready_status_watchdog_and_stopping(home, videos, notify):
    with_env(home, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="400000")
    proc = home.start()
    ready = wait_until(lambda: notify.seen("READY"), 10, "READY=1")
    assert ready[0]["STATUS"].startswith(f"Watching {home.inbox}") and ready[0]["MAINPID"] == str(proc.pid)
    # READY comes only once the store is open and the observer runs: a file dropped now is taken.
    home.drop(videos["clip.mp4"], "a.mp4")
    home.wait_status("a.mp4")
    pings = wait_until(lambda: len(notify.seen("WATCHDOG")) >= 5 and notify.seen("WATCHDOG"), 10,
                       "watchdog pings at half of WATCHDOG_USEC")
    assert len(pings) >= 5
    wait_until(lambda: any("1 completed" in m.get("STATUS", "") for m in notify.collect()), 10,
               "a STATUS= line with the counts")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert notify.seen("STOPPING")


def test_no_watchdog_pings_without_watchdog_usec(home, notify):
    with_env(home, NOTIFY_SOCKET=str(notify.path))
    proc = home.start()
    wait_until(lambda: notify.seen("READY"), 10, "READY=1")
    time.sleep(1.0)
    assert notify.seen("WATCHDOG") == []
    assert home.stop(proc) == 0


def test_graceful_stop_lets_a_running_job_finish(home, videos, tmp_path):
    setup_plugins(home, tmp_path)  # `progress` takes 1.5 s
    home.config.write_text(home.config.read_text().replace("stop_grace = 1", "stop_grace = 15"))
    proc = home.start()
    home.drop(videos["clip.mp4"], "slow/a.mp4")
    home.wait_status("slow/a.mp4", ("running",))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert home.json("show", "slow/a.mp4")["status"] == "completed"


def test_sighup_reloads_rules_without_dropping_jobs(home, videos, tmp_path):
    setup_plugins(home, tmp_path)
    proc = home.start()
    home.drop(videos["clip.mp4"], "slow/running.mp4")
    home.wait_status("slow/running.mp4", ("running",))
    home.config.write_text(home.config.read_text() + '\n[[rules]]\nmatch = "new/*"\nplugins = ["metadata", "scenes"]\n')
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in home.log_text(), 20, "the reload")
    assert proc.poll() is None
    home.drop(videos["clip.webm"], "new/b.webm")
    assert home.wait_status("new/b.webm")["plugins"] == ["metadata", "scenes"]
    assert home.wait_status("slow/running.mp4")["status"] == "completed"  # not dropped by the reload
    # A bad config on reload is refused and the running one kept.
    home.config.write_text(home.config.read_text() + '\nplugins = ["nosuchplugin"]\n')
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in home.log_text(), 20, "the refused reload")
    assert proc.poll() is None
    assert home.stop(proc) == 0


def test_journald_priority_prefixes(home):
    """With $JOURNAL_STREAM naming our stderr, lines carry <N> and no timestamp of our own."""
    log = home.root / "journal.log"
    home.root.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        st = os.fstat(fh.fileno())
        env = home.env()
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        home.inbox.mkdir(parents=True, exist_ok=True)
        (home.inbox / "x.mp4").write_text("junk")
        subprocess.run([sys.executable, "-m", "forgesyte", "run", "--once"], env=env, stderr=fh,
                       stdout=subprocess.DEVNULL, timeout=60)
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith(("<6>", "<4>", "<3>", "<7>")) for line in lines), lines
    assert any(line.startswith("<4>forgesyte.daemon: job ") and "x.mp4: failed" in line for line in lines)
    assert not any(line[3:7].isdigit() for line in lines)  # no "2026-..." timestamps


def _verifiable(unit_text: str, tmp_path: Path) -> Path:
    """systemd-analyze verify wants ExecStart to exist: point it at this venv's python."""
    path = tmp_path / "forgesyte.service"
    path.write_text(unit_text.replace("/usr/local/bin/forgesyte", f"{sys.executable} -m forgesyte"))
    return path


def test_shipped_unit_is_the_template_and_verifies(tmp_path):
    settings = load_settings({}, {"STATE_DIRECTORY": "/var/lib/forgesyte"})
    expected = render(settings, "/usr/local/bin/forgesyte", user_unit=False, default_home=True,
                      origin=" for the defaults (packaging/systemd/forgesyte.service)")
    shipped = (REPO / "packaging/systemd/forgesyte.service").read_text()
    assert shipped == expected, "regenerate packaging/systemd/forgesyte.service from forgesyte.daemon.unit"
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=forgesyte",
                 "RequiresMountsFor=", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                 "ProtectHome=yes", "User=forgesyte"):
        assert line in shipped
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    proc = subprocess.run([analyze, "verify", str(_verifiable(shipped, tmp_path))],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    score = subprocess.run([analyze, "security", "--offline=true", str(_verifiable(shipped, tmp_path))],
                           capture_output=True, text=True)
    exposure = float(score.stdout.split("Overall exposure level for forgesyte.service:")[1].split()[0])
    assert exposure <= 1.0, score.stdout[-500:]


def test_service_install_writes_a_unit_for_the_configured_dirs(home, tmp_path):
    out = home.cli("service", "install", "--unit-dir", str(tmp_path / "units"))
    assert out.returncode == 0, out.stderr
    unit = (tmp_path / "units" / "forgesyte.service").read_text()
    assert f"Environment=FORGESYTE_INBOX={home.inbox}" in unit
    assert f"RequiresMountsFor={home.inbox} {home.output} {home.state}" in unit
    assert f"ExecStart={sys.executable} -m forgesyte run" in unit
    assert "systemctl daemon-reload" in out.stdout and "systemctl enable --now forgesyte" in out.stdout
    user = home.cli("service", "install", "--user", "--print")
    assert "WantedBy=default.target" in user.stdout and "User=" not in user.stdout
    assert "systemctl --user" not in user.stdout  # --print prints the unit only
    analyze = shutil.which("systemd-analyze")
    if analyze:
        for text in (unit, user.stdout):
            path = tmp_path / "check" / "forgesyte.service"
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            proc = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
