"""systemd integration without a dependency: the sd_notify datagram protocol and
journald-friendly logging.

sd_notify is one datagram of `KEY=value` lines to the AF_UNIX socket named by
$NOTIFY_SOCKET (a leading `@` means the abstract namespace). It is small and
stable enough that a library would add more than it saves.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time

from forgesyte.text import SafeFormatter

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING when run under systemd (no-op otherwise)."""

    def __init__(self, env: dict[str, str] | None = None):
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET")
        self.address = ("\0" + address[1:]) if address and address.startswith("@") else address
        self._sock = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        wanted = usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # Ping at half the interval systemd expects, as sd_watchdog_enabled(3) advises.
        self.watchdog_every = int(usec) / 2e6 if wanted else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str) -> None:
        if self._sock is None:
            return
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            self._sock.sendto(message.encode("utf-8"), self.address)
        except OSError as exc:  # systemd gone or socket full: never fatal
            logging.getLogger("forgesyte.systemd").debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        self.send(ready="1", status=status, mainpid=str(os.getpid()))

    def status(self, text: str) -> None:
        self.send(status=text)

    def stopping(self, status: str = "Stopping") -> None:
        self.send(stopping="1", status=status)

    def reloading(self) -> None:
        self.send(reloading="1", status="Reloading configuration")

    def watchdog(self, healthy: bool) -> None:
        """Ping when due, and only while healthy: a stuck daemon gets restarted."""
        if self.watchdog_every is None or not healthy:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_every:
            self._last_ping = now
            self.send(watchdog="1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(SafeFormatter):
    """`<N>name: message`: journald reads the priority prefix and adds its own timestamps.
    Control characters from names are escaped (SafeFormatter), so a name cannot forge a
    journal entry; each traceback line is an indented entry of the same priority."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        head, tail = self._parts(record)
        return "\n".join(f"<{priority}>{line}" for line in [head] + tail)


def stderr_is_journal(env: dict[str, str] | None = None) -> bool:
    """True when stderr is journald's stream ($JOURNAL_STREAM names its device:inode)."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def configure_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(SafeFormatter(PLAIN_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
