"""CLI -> daemon requests, so the daemon stays the single writer of the store.

A CLI write (`retry`) drops `<state>/requests/<id>.json` (atomically); the
daemon applies it on its next tick and answers in `<id>.reply`. When no
daemon runs, the CLI takes the state lock and applies the change itself.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from forgesyte.storage.atomic import atomic_write_json

REQUESTS_DIR = "requests"


class MailboxTimeout(Exception):
    pass


def _dir(state_dir: Path | str) -> Path:
    path = Path(state_dir) / REQUESTS_DIR
    os.makedirs(path, mode=0o750, exist_ok=True)
    return path


def send(state_dir: Path | str, request: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Post a request and wait for the daemon's reply."""
    folder = _dir(state_dir)
    rid = uuid.uuid4().hex
    atomic_write_json(folder / f"{rid}.json", request)
    reply = folder / f"{rid}.reply"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(reply, "rb") as fh:
                answer = json.load(fh)
        except FileNotFoundError:
            time.sleep(0.05)
            continue
        os.unlink(reply)
        return answer
    try:
        os.unlink(folder / f"{rid}.json")
    except FileNotFoundError:
        pass
    raise MailboxTimeout("The daemon did not answer within %d seconds." % timeout)


def serve(state_dir: Path | str, handle: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """Apply every waiting request; returns how many were handled."""
    folder = _dir(state_dir)
    handled = 0
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        rid = entry.name[: -len(".json")]
        try:
            with open(entry.path, "rb") as fh:
                request = json.load(fh)
            answer = handle(request)
        except (OSError, ValueError) as exc:
            answer = {"ok": False, "error": f"The request could not be read ({exc})."}
        atomic_write_json(folder / f"{rid}.reply", answer)
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            pass
        handled += 1
    return handled
