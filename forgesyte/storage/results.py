"""The result store: one folder per job under the output root.

Layout (keys relative to the output root):

    [<source>/]<date>/<base name>-<job id>/results.json      the results document
    [<source>/]<date>/<base name>-<job id>/<plugin>/<file>   artifacts a plugin wrote

(storage/layout.py says why: no inbox-derived folders, so none collide or
nest.) The database stores only the results key; `Root` turns it into a path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from forgesyte.config import DIR_MODE
from forgesyte.storage import layout
from forgesyte.storage.atomic import atomic_write_json
from forgesyte.storage.paths import Root, key_from_name

RESULTS_NAME = "results.json"


class ResultsMissing(LookupError):
    pass


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k != "run"}  # mtime_ns stays: a rebuild need not re-hash


def finished_record(record: dict[str, Any], status: str, error: str | None, output_key: str | None,
                    finished_at: str | None = None) -> dict[str, Any]:
    """The job's record as it stands once the job is finished: embedded in the results
    document (as "job"), so the store's history can be rebuilt from the output folder.

    `record` is the job as it was claimed (or, for a job finished without a worker,
    as it is now); the finish is one more transition, so `rev` goes up by one, as it
    will in the store. A document whose record has a higher `rev` than the store's
    is newer than the store (a completion a crash kept from the store); one with a
    lower or equal `rev` is older (the job was retried or requeued since)."""
    from forgesyte.storage.ids import utc_now

    return {**record, "status": status, "error": error, "output": output_key,
            "progress": 100 if status == "completed" else record.get("progress", 0),
            "finished_at": finished_at or utc_now(), "rev": int(record.get("rev", 0) or 0) + 1}


class ResultStore:
    def __init__(self, output_root: Path | str):
        self.root = Root(output_root)

    @staticmethod
    def job_folder_key(input_key: str, job_id: str) -> str:
        """The layout lives in storage/layout.py (`[<source>/]<date>/<base name>-<id>`)."""
        return layout.job_folder_key(input_key, job_id)

    def job_folder(self, folder_key: str) -> Path:
        path = self.root.path_for(folder_key)
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)
        return path

    def artifact(self, folder_key: str, plugin: str, name: str) -> tuple[Path, str]:
        """Absolute path to write an artifact to, and the key to record for it."""
        key = f"{folder_key}/{plugin}/{key_from_name(name)}"
        path = self.root.path_for(key)
        os.makedirs(path.parent, mode=DIR_MODE, exist_ok=True)
        return path, key

    @staticmethod
    def results_key(folder_key: str) -> str:
        return f"{folder_key}/{RESULTS_NAME}"

    def write(self, folder_key: str, document: dict[str, Any]) -> str:
        """Write the results document atomically; returns its key."""
        self.job_folder(folder_key)
        key = f"{folder_key}/{RESULTS_NAME}"
        atomic_write_json(self.root.path_for(key), document)
        return key

    def write_finished(self, job: dict[str, Any], status: str, error: str | None,
                       plugins: dict[str, Any] | None = None, duplicate_of: str | None = None) -> str:
        """The results document of a job finished without running its plugins here (input
        vanished, a duplicate of a failed original, a duplicate reusing a result, cancel):
        every finished job has one, carrying its record, so the store can be rebuilt from
        the output folder. Returns its key (the record's `output`)."""
        folder = self.job_folder_key(job["input"], job["id"])
        key = self.results_key(folder)
        document: dict[str, Any] = {"job_id": job["id"], "input": job["input"]}
        if duplicate_of:
            document["duplicate_of"] = duplicate_of
        document["plugins"] = plugins or {}
        document["job"] = finished_record(_public(job), status, error, key)
        return self.write(folder, document)

    def outcome(self, folder_key: str, job: dict[str, Any] | str) -> tuple[str, str, str | None] | None:
        """(status, results key, error) if this job's results document is on disk and newer
        than `job` (the store's record; given only an id, any document of that job counts)."""
        key = f"{folder_key}/{RESULTS_NAME}"
        try:
            document = self.read(key)
        except (ResultsMissing, ValueError):
            return None
        job_id = job if isinstance(job, str) else job["id"]
        if not isinstance(document, dict) or document.get("job_id") != job_id:
            return None
        record = document.get("job")
        if isinstance(record, dict) and record.get("status") in ("completed", "failed"):
            if not isinstance(job, str) and "rev" in record and record["rev"] <= job.get("rev", 0):
                return None  # from an earlier attempt: the job was requeued or retried since
            return record["status"], key, record.get("error")
        errors = [s["error"] for s in document.get("plugins", {}).values()
                  if isinstance(s, dict) and set(s) == {"error"}]
        return ("failed", key, errors[0]) if errors else ("completed", key, None)

    def remove_job_folder(self, results_key: str) -> None:
        """Delete a job's folder (given its results key), never anything outside the root."""
        folder = results_key.rsplit("/", 1)[0] if "/" in results_key else results_key
        layout.remove_job_folder(self.root, folder)  # keeps other jobs' folders nested in it

    def read(self, key: str) -> dict[str, Any]:
        path = self.root.path_for(key)
        try:
            with open(path, "rb") as fh:
                return json.load(fh)
        except FileNotFoundError:
            raise ResultsMissing(f"The results file {path} is missing.") from None
        except ValueError:
            raise ResultsMissing(f"The results file {path} is not valid JSON.") from None
