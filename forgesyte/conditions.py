"""Ongoing conditions (a full disk, a missing inbox, refused inotify watches), logged
like a person would want them: once when they start, a reminder every few minutes
while they last, once when they clear; never a line per retry (a loop that retries
every 50 ms would otherwise write 20 lines a second to the journal).

Every active condition is also published (the daemon writes them into its lock
file) so `forgesyte doctor` can say what the daemon is living with right now.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from forgesyte.storage.ids import utc_now

REMIND_EVERY = 300.0  # seconds between reminders while a condition lasts

_lock = threading.Lock()
_active: dict[str, dict[str, Any]] = {}
_publisher: Callable[[list[dict[str, Any]]], None] | None = None


def active() -> list[dict[str, Any]]:
    """The conditions now in force: [{"name", "since", "message", ...details}]."""
    with _lock:
        return [dict(item) for item in _active.values()]


def publish_to(publisher: Callable[[list[dict[str, Any]]], None] | None) -> None:
    """Call `publisher(active())` now and whenever a condition starts, changes or clears."""
    global _publisher
    with _lock:
        _publisher = publisher
        _active.clear()
    _publish()


def _publish() -> None:
    publisher = _publisher
    if publisher is None:
        return
    try:
        publisher(active())
    except OSError as exc:  # the state disk may be the full one: say so, never fail
        logging.getLogger("forgesyte.daemon").debug("cannot publish conditions: %s", exc)


class Condition:
    """One kind of ongoing trouble. `report()` while it holds, `clear()` when it is over."""

    def __init__(self, name: str, logger: logging.Logger, level: int = logging.WARNING,
                 remind_every: float = REMIND_EVERY):
        self.name = name
        self.log = logger
        self.level = level
        self.remind_every = remind_every
        self.since: float | None = None
        self._since_iso = ""
        self._last_logged = 0.0
        self._last_message = ""

    @property
    def active(self) -> bool:
        return self.since is not None

    def report(self, message: str, **details: Any) -> bool:
        """The condition holds (message: one sentence, names and keys, no absolute paths
        of the state). Logged when it starts or when the reminder is due; True if logged."""
        now = time.monotonic()
        starting = self.since is None
        if starting:
            self.since, self._since_iso = now, utc_now()
        changed = message != self._last_message
        self._last_message = message
        if starting or changed:
            with _lock:
                _active[self.name] = {"name": self.name, "since": self._since_iso,
                                      "message": message, **details}
            _publish()
        if starting:
            self._last_logged = now
            self.log.log(self.level, "%s", message)
            return True
        if now - self._last_logged >= self.remind_every:
            self._last_logged = now
            minutes = (now - self.since) / 60
            self.log.log(self.level, "still, after %.0f min: %s", minutes, message)
            return True
        return False

    def clear(self, message: str | None = None) -> bool:
        """The condition is over; logs `message` (at INFO) if it was active. True if it was."""
        if self.since is None:
            return False
        self.since = None
        self._last_message = ""
        with _lock:
            _active.pop(self.name, None)
        _publish()
        if message:
            self.log.info("%s", message)
        return True
