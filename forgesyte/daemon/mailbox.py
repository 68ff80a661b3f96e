"""CLI -> daemon requests, so the daemon stays the single writer of the store.

A CLI write (`retry`, `prune`) drops `<state>/requests/<id>.json`
(atomically); the daemon applies it on its next tick and answers in
`<id>.reply`. When no daemon runs, the CLI takes the state lock and applies
the change itself.

The requester is often not the daemon's account: an operator runs
`sudo forgesyte prune ...` while the daemon runs as `forgesyte` (under
systemd with PrivateUsers=yes, where root is just "nobody" to the daemon). So
a request is handed to the state folder's owner (root can chown; anyone else
makes it group- or world-readable inside the 0750 folder), and the reply is
as readable as the request was.

Requests and replies are state files like any other: each is a checksummed,
versioned document (storage/tinystore.py: a header line with format, version,
length and CRC-32, then the JSON body), written whole or not at all. A request
that does not verify (garbled, cut, another version of ForgeSyte) is answered
with a sentence and moved to quarantine/, never obeyed and never deleted.
"""

from __future__ import annotations

import logging
import os
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forgesyte.storage.atomic import atomic_write_bytes
from forgesyte.storage.errors import StateDamaged, UnknownFormat
from forgesyte.storage.requests import REQUESTS_DIR, decode_reply, decode_request, encode_reply, encode_request

log = logging.getLogger("forgesyte.daemon")


class MailboxError(Exception):
    """The request could not be delivered: one sentence."""


class MailboxTimeout(MailboxError):
    pass


def _dir(state_dir: Path | str) -> Path:
    """The requests folder, owned like the state folder even when root makes it."""
    path = Path(state_dir) / REQUESTS_DIR
    try:
        os.mkdir(path, 0o750)
    except FileExistsError:
        return path
    if os.geteuid() == 0:
        owner = os.stat(state_dir)
        if (owner.st_uid, owner.st_gid) != (0, 0):
            os.chown(path, owner.st_uid, owner.st_gid)
    return path


def _write(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> int:
    """Atomically write `data` with exactly `mode` (not the umask's), handed to `owner`;
    every byte is checked written before the rename (atomic.py), so neither side ever
    reads half a request or half a reply.

    Returns the mode the file got: without root, the owner cannot be changed,
    and a file the daemon's group cannot read is made world-readable instead.
    """
    got = [mode]

    def hand_over(fd: int) -> None:
        if owner is not None:
            try:
                os.fchown(fd, *owner)
            except PermissionError:
                try:
                    os.fchown(fd, -1, owner[1])  # allowed when we are in the daemon's group
                except PermissionError:
                    got[0] |= 0o004
        os.fchmod(fd, got[0])

    atomic_write_bytes(path, data, 0o600, prepare=hand_over)  # a dot name: serve() never picks it up
    return got[0]


def send(state_dir: Path | str, request: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Post a request and wait for the daemon's reply."""
    folder = _dir(state_dir)
    rid = uuid.uuid4().hex
    owner = os.stat(state_dir)
    hand_to = None if owner.st_uid == os.geteuid() else (owner.st_uid, owner.st_gid)
    try:
        _write(folder / f"{rid}.json", encode_request(request), 0o640, hand_to)
    except OSError as exc:
        raise MailboxError(f"The request to the daemon could not be written to {REQUESTS_DIR}/ in the state "
                           f"folder ({exc.strerror or exc}).") from None
    reply = folder / f"{rid}.reply"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(reply, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            time.sleep(0.05)
            continue
        os.unlink(reply)
        try:
            return decode_reply(raw, f"{REQUESTS_DIR}/{reply.name}")
        except (StateDamaged, UnknownFormat) as exc:
            raise MailboxError(f"The daemon's reply could not be read: {exc}") from None
    try:
        os.unlink(folder / f"{rid}.json")
    except FileNotFoundError:
        pass
    raise MailboxTimeout(f"The daemon did not answer within {timeout:.0f} seconds.")


def serve(state_dir: Path | str, handle: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """Apply every waiting request; returns how many were handled."""
    folder = _dir(state_dir)
    handled = 0
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue  # a directory or link named like a request is not one (recovery quarantines it)
        except OSError:
            continue
        rid = entry.name[: -len(".json")]
        rel = f"{REQUESTS_DIR}/{entry.name}"
        mode, damaged = 0o640, None
        try:
            with open(entry.path, "rb") as fh:
                # The reply is as readable as the request: a requester that could
                # not hand its request to us reads our answer as "other".
                mode |= stat.S_IMODE(os.fstat(fh.fileno()).st_mode) & 0o004
                raw = fh.read()
            request = decode_request(raw, rel)
        except (StateDamaged, UnknownFormat) as exc:
            damaged = str(exc)
            answer = {"ok": False, "error": f"The request could not be read: {damaged}"}
        except OSError as exc:
            answer = {"ok": False, "error": f"The request could not be read ({exc.strerror or exc})."}
        else:
            answer = handle(request)
        try:
            _write(folder / f"{rid}.reply", encode_reply(answer), mode)
        except OSError as exc:  # a full disk: the request was handled; its sender times out with a sentence
            log.warning("could not write the reply to request %s (%s)", rid, exc.strerror or exc)
        try:
            if damaged is not None:  # never obeyed, never deleted: kept for whoever wants to look
                from forgesyte.storage.recovery import quarantine

                quarantine(Path(state_dir), rel, "is not a request this daemon can read")
            else:
                os.unlink(entry.path)
        except OSError:
            pass
        handled += 1
    return handled
