"""The result store: one folder per job under the output root.

Layout (keys relative to the output root):

    <input key>-<job id>/results.json        the results document
    <input key>-<job id>/<plugin>/<file>     artifacts a plugin wrote

The folder mirrors the inbox tree, so a user browsing the output finds
`cam1/clip.mp4-01jd.../` next to the other results for `cam1/`. The
database stores only the results key; `Root` turns it into a path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from forgesyte.config import DIR_MODE
from forgesyte.storage.atomic import atomic_write_json
from forgesyte.storage.paths import Root

RESULTS_NAME = "results.json"


class ResultsMissing(LookupError):
    pass


class ResultStore:
    def __init__(self, output_root: Path | str):
        self.root = Root(output_root)

    @staticmethod
    def job_folder_key(input_key: str, job_id: str) -> str:
        Root.check_key(input_key)
        return f"{input_key}-{job_id}"

    def job_folder(self, folder_key: str) -> Path:
        path = self.root.path_for(folder_key)
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)
        return path

    def artifact(self, folder_key: str, plugin: str, name: str) -> tuple[Path, str]:
        """Absolute path to write an artifact to, and the key to record for it."""
        key = f"{folder_key}/{plugin}/{name}"
        path = self.root.path_for(key)
        os.makedirs(path.parent, mode=DIR_MODE, exist_ok=True)
        return path, key

    def write(self, folder_key: str, document: dict[str, Any]) -> str:
        """Write the results document atomically; returns its key."""
        self.job_folder(folder_key)
        key = f"{folder_key}/{RESULTS_NAME}"
        atomic_write_json(self.root.path_for(key), document)
        return key

    def read(self, key: str) -> dict[str, Any]:
        path = self.root.path_for(key)
        try:
            with open(path, "rb") as fh:
                return json.load(fh)
        except FileNotFoundError:
            raise ResultsMissing(f"The results file {path} is missing.") from None
        except ValueError:
            raise ResultsMissing(f"The results file {path} is not valid JSON.") from None
