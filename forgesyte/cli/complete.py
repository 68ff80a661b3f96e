"""Shell completion for JOB and PATH arguments (click's `shell_complete` callbacks).

A Tab press runs the whole CLI in the background of someone's shell, so these
callbacks only read: they never create a folder (a mistyped --home stays
absent), never open the store for writing, and answer nothing rather than raise
when the state or the inbox is missing or damaged.

Names are shown as the CLI shows them (`forgesyte.text.display`: control
characters and undecodable bytes as escapes), which is a spelling JOB and PATH
accept back; a raw newline would also split the one-item-per-line protocol of
the shell scripts.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import click
from click.shell_completion import CompletionItem

# A Tab press must stay quick on a big inbox: one folder is listed, at most this many names.
MAX_ENTRIES = 2000
MAX_JOBS = 500


def _settings(ctx: click.Context):
    from forgesyte.config import load_settings

    flags = {k: v for k, v in ctx.find_root().params.items() if v is not None}
    return load_settings(flags)


def _job_items(ctx: click.Context, incomplete: str, seen: set[str]) -> list[CompletionItem]:
    """Recent job ids and their inputs that start with `incomplete` (nothing on any error)."""
    from forgesyte.cli import _store
    from forgesyte.text import display

    items: list[CompletionItem] = []
    try:
        store = _store(_settings(ctx))
        for job in store.newest(MAX_JOBS):
            shown = display(job["input"])
            if job["id"].startswith(incomplete):
                items.append(CompletionItem(job["id"], help=f"{job['status']} {shown}"))
            if shown not in seen and (shown.startswith(incomplete) or job["input"].startswith(incomplete)):
                seen.add(shown)
                items.append(CompletionItem(shown, help=job["status"]))
    except Exception:  # noqa: BLE001 - a shell's Tab must never print a traceback
        return []
    return items


def _listing(inbox: str, folder_key: str) -> Iterator[tuple[str, bytes, bool]]:
    """(key, name, is a folder) for the entries of one inbox folder; symlinked folders
    are not entered (the daemon follows no link out of the inbox, and a Tab need not check)."""
    from forgesyte.storage.paths import Root, bytes_from_key, key_from_bytes

    base = os.fsencode(inbox)
    if folder_key:
        Root.check_key(folder_key)
        base = os.path.join(base, bytes_from_key(folder_key))
        real_inbox = os.path.realpath(inbox)
        if not os.fsdecode(os.path.realpath(base)).startswith(real_inbox.rstrip(os.sep) + os.sep):
            return
    with os.scandir(base) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_ENTRIES:
                return
            prefix = folder_key + "/" if folder_key else ""
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            yield prefix + key_from_bytes(entry.name), entry.name, is_dir


def _path_items(ctx: click.Context, incomplete: str, seen: set[str]) -> list[CompletionItem]:
    """Files under the inbox, as relative keys, that start with `incomplete`: the folder
    part of `incomplete` is listed; a lone matching folder is entered, so the shell goes
    on completing inside it instead of ending the word at the folder."""
    from forgesyte.storage.paths import key_spellings, name_from_key
    from forgesyte.text import display

    try:
        inbox = str(_settings(ctx).inbox)
        if not os.path.isdir(inbox):
            return []
        typed = incomplete
        while typed.startswith("./"):
            typed = typed[2:]
        folder = typed.rpartition("/")[0].strip("/")
        folder_key = ""
        if folder:  # as shown (escapes) or as raw bytes: the spelling that is a folder
            folder_key = next(k for k in key_spellings(folder)
                              if os.path.isdir(os.path.join(inbox, name_from_key(k))))
        entered = None
        for _ in range(32):  # enter a lone folder, a bounded number of levels
            shown_typed = display(typed)
            found: list[tuple[str, str, bool]] = []
            for key, name, is_dir in _listing(inbox, folder_key):
                shown = display(key)
                if not (shown.startswith(shown_typed) or key.startswith(typed)):
                    continue
                last = shown_typed.rpartition("/")[2]
                if name.startswith(b".") and not last.startswith("."):
                    continue  # hidden names only when asked for, as shells do
                found.append((key, shown, is_dir))
            if len(found) == 1 and found[0][2]:
                entered = found[0]
                folder_key, typed = entered[0], entered[1] + "/"
                continue
            break
        if not found and entered is not None:
            found = [entered]  # an empty folder: offer the folder itself
        items = []
        for key, shown, is_dir in sorted(found, key=lambda f: f[1]):
            if shown in seen:
                continue
            seen.add(shown)
            items.append(CompletionItem(shown + "/" if is_dir else shown, help="folder" if is_dir else "in the inbox"))
        return items
    except Exception:  # noqa: BLE001 - a missing or unreadable folder completes to nothing
        return []


def complete_jobs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """JOB: recent job ids and input keys."""
    return _job_items(ctx, incomplete, set())


def complete_jobs_and_paths(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """JOB for `wait`: job ids and inputs, and files in the inbox that are not jobs yet."""
    seen: set[str] = set()
    return _job_items(ctx, incomplete, seen) + _path_items(ctx, incomplete, seen)


def complete_paths(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """PATH for `why`: any file under the inbox (a job or not), relative to the inbox."""
    return _path_items(ctx, incomplete, set())
