"""Job ids and timestamps.

Ids are ULID-style (time first), so sorting ids sorts jobs by creation, the
chunk that holds a job is found from its id (chunks partition the id space),
and "newest N" reads only the last chunks. `JobIds` never issues an id below
the floor the store persists, whatever the wall clock does.
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
_VALUE = {c: i for i, c in enumerate(_CROCKFORD)}
ID_LENGTH = 16
_RAND_BITS = 30  # 6 characters of 5 bits


def _encode(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        out.append(_CROCKFORD[digit])
    return "".join(reversed(out))


def _decode(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + _VALUE[char]
    return value


def is_job_id(text: str) -> bool:
    return len(text) == ID_LENGTH and all(c in _VALUE for c in text)


class JobIds:
    """ULID-style ids: 10 chars of milliseconds + 6 chars that count up within one.

    Ids sort by creation even when the wall clock steps back (NTP, a restored
    VM): a new id is never below `floor`, the highest id issued so far, which
    the store persists with every flush and hands back at open. After a step
    back, ids keep the floor's millisecond and count up in the low part until
    the clock catches up again.
    """

    def __init__(self, floor: str | None = None) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0
        if floor:
            self.observe(floor)

    def observe(self, job_id: str) -> None:
        """Never issue an id at or below this one (an id read back from the state)."""
        if not is_job_id(job_id):
            return
        ms, rand = _decode(job_id[:10]), _decode(job_id[10:])
        with self._lock:
            if (ms, rand) > (self._last_ms, self._last_rand):
                self._last_ms, self._last_rand = ms, rand

    @property
    def floor(self) -> str | None:
        if self._last_ms < 0:
            return None
        return _encode(self._last_ms, 10) + _encode(self._last_rand, 6)

    def new(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
                if rand >= 1 << _RAND_BITS:  # a million ids in one millisecond: borrow the next one
                    ms, rand = ms + 1, 0
            else:
                rand = secrets.randbits(_RAND_BITS - 1)  # leaves room to count up within one ms
            self._last_ms, self._last_rand = ms, rand
            return _encode(ms, 10) + _encode(rand, 6)
