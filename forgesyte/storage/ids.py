"""Job ids and timestamps.

Ids are ULID-style (time first), so sorting ids sorts jobs by creation, a
segment's [min_id, max_id] range finds a job, and "newest N" needs no index.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime, timedelta, timezone

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso_utc(moment: datetime) -> str:
    """ISO 8601 UTC with millisecond precision, e.g. 2026-11-25T03:09:23.123Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """The inverse of iso_utc: an aware UTC datetime."""
    return datetime.strptime(text, _FORMAT).replace(tzinfo=timezone.utc)


def utc_now() -> str:
    return iso_utc(datetime.now(timezone.utc))


def utc_in(seconds: float) -> str:
    """The timestamp `seconds` from now (negative: ago)."""
    return iso_utc(datetime.now(timezone.utc) + timedelta(seconds=seconds))


def seconds_until(text: str | None) -> float:
    """Seconds from now until the timestamp (0 for None; negative if past)."""
    if not text:
        return 0.0
    return (parse_iso(text) - datetime.now(timezone.utc)).total_seconds()


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"  # ASCII-sorted, so ids sort by time


class JobIds:
    """ULID-style ids: 10 chars of milliseconds + 6 random chars, monotonic per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    @staticmethod
    def _encode(value: int, width: int) -> str:
        out = []
        for _ in range(width):
            value, digit = divmod(value, 32)
            out.append(_CROCKFORD[digit])
        return "".join(reversed(out))

    def new(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
            else:
                rand = secrets.randbits(29)  # leaves room to count up within one ms
            self._last_ms, self._last_rand = ms, rand
            return self._encode(ms, 10) + self._encode(rand, 6)
