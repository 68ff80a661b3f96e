"""Where a job's results go in the output folder.

    [<source>/]<YYYY-MM-DD>/<base name>-<job id>/results.json
    [<source>/]<YYYY-MM-DD>/<base name>-<job id>/<plugin>/<artifact>

<source> is the inbox folder the file came in through (the first component of
its key: `cam1` for `cam1/2026/clip.mp4`), made safe and short; a file dropped
straight into the inbox has none. The date is the job's creation day (UTC,
read from its id); the base name is the input's file name, made safe and
short. Only that one level comes from the inbox's tree, so whatever the inbox
holds, job folders sit at a fixed depth, are never nested in each other and
never shared: two jobs differ in id, and the id (fixed length) ends the folder
name. Every component is bounded, so a 255-byte input name or a deep inbox
still gives a folder well within NAME_MAX and PATH_MAX. Two sources whose
names clean up the same (`a\x01`, `a\x02`) share a grouping folder, never a
job folder.

Older releases mirrored the inbox (`cam1/clip.mp4-<id>/`). Those folders stay
where they are: records store the results key itself, which keeps working.
Removing a job's folder never removes another job's folder nested in it (an
old layout let an inbox folder named like a job folder cause that).
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone

from forgesyte.storage.paths import Root, UnsafeKey

RESULTS_NAME = "results.json"
MAX_BASE_BYTES = 120  # + "-" + id (<= 40) stays far below NAME_MAX (255 bytes)
UNDATED = "undated"

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
# Characters a folder name for people should not hold: controls and reordering marks,
# the key escape's backslash, and what Windows clients of an exported share refuse.
_UNSAFE = re.compile('[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\\\\<>:"|?*]')
_JOB_FOLDER = re.compile(r".-[0-9a-z]{16}$")


def job_date(job_id: str) -> str:
    """YYYY-MM-DD (UTC) of the id's time part, or 'undated' for an id of another shape."""
    head = job_id[:10]
    if len(job_id) != 16 or any(c not in _CROCKFORD for c in job_id):
        return UNDATED
    ms = 0
    for char in head:
        ms = ms * 32 + _CROCKFORD.index(char)
    try:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return UNDATED


def base_name(input_key: str) -> str:
    """The input's file name, safe for a folder name and at most MAX_BASE_BYTES long."""
    name = _UNSAFE.sub("_", input_key.rsplit("/", 1)[-1])
    if name[:1] in (".", "-", "~", " "):
        name = "_" + name[1:]  # neither hidden, nor an option, nor a temp name
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_BASE_BYTES:
        name = encoded[:MAX_BASE_BYTES].decode("utf-8", "ignore")
    name = name.rstrip(" .")  # Windows clients cannot open a name that ends so
    return name or "_"


def source_folder(input_key: str) -> str | None:
    """The inbox folder the input came in through (a camera, a share), made safe; None
    for a file dropped straight into the inbox."""
    if "/" not in input_key:
        return None
    return base_name(input_key.split("/", 1)[0])


def job_folder_key(input_key: str, job_id: str) -> str:
    """The output folder key of a job: `[<source>/]<date>/<base name>-<job id>`."""
    Root.check_key(input_key)
    if not job_id or "/" in job_id or job_id in (".", ".."):
        raise UnsafeKey(f"{job_id!r} is not a job id.")
    folder = f"{job_date(job_id)}/{base_name(input_key)}-{job_id}"
    source = source_folder(input_key)
    return f"{source}/{folder}" if source else folder


def newest_file(root: Root, folder_key: str) -> str | None:
    """The absolute path of the newest file in a job's folder (None if none): after a
    write() fails with ENOSPC, which names no file, that is the one being written."""
    newest: tuple[int, str] | None = None
    try:
        top = root.path_for(folder_key)
    except UnsafeKey:
        return None
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                mtime = os.stat(path).st_mtime_ns
            except OSError:
                continue
            if newest is None or mtime >= newest[0]:
                newest = (mtime, path)
    return newest[1] if newest else None


def _folder_job_id(path: str) -> str | None:
    try:
        with open(os.path.join(path, RESULTS_NAME), "rb") as fh:
            job_id = json.load(fh).get("job_id")
        return job_id if isinstance(job_id, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def _another_job(path: str, name: str, mine: str | None) -> bool:
    """Does this directory (below a job's folder) belong to another job?"""
    other = _folder_job_id(path)
    if other is not None:
        return other != mine
    return bool(_JOB_FOLDER.search(name)) and (mine is None or not name.endswith("-" + mine))


def remove_job_folder(root: Root, folder_key: str) -> None:
    """Delete a job's folder, never anything outside the root, and never another job's
    folder nested inside it (that subtree and the directories leading to it stay)."""
    top = str(root.path_for(folder_key))
    if not os.path.isdir(top) or os.path.islink(top):
        return
    mine = _folder_job_id(top)
    if mine is None:
        match = re.search(r"-([0-9a-z]{16})$", folder_key)
        mine = match.group(1) if match else None
    walked = []
    for dirpath, dirnames, filenames in os.walk(top, topdown=True, followlinks=False):
        dirnames[:] = [d for d in dirnames
                       if not _another_job(os.path.join(dirpath, d), d, mine)
                       or os.path.islink(os.path.join(dirpath, d))]
        walked.append(dirpath)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            try:
                os.unlink(os.path.join(dirpath, name))
            except FileNotFoundError:
                pass
    for dirpath in reversed(walked):  # deepest first; a directory still holding a kept job stays
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
    # Tidy parents left empty (date folders, old inbox mirrors), stopping at the root.
    parent = os.path.dirname(top)
    root_path = str(root.path)
    while parent != root_path and parent.startswith(root_path + os.sep):
        try:
            os.rmdir(parent)
        except OSError:
            break
        parent = os.path.dirname(parent)
