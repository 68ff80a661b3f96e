"""The plugin protocol. A plugin module imports this and nothing else of ForgeSyte.

A plugin is an object with `name`, `version`, `description`, `defaults`
(option defaults) and `run(video, ctx) -> dict`. The dict must be JSON-able; it
becomes the plugin's section of the job's results document. Raise
`PluginError` for a failure the user should read (one sentence); mark it
`transient=True` when trying again later may succeed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping


class PluginError(Exception):
    """A failure with a readable message; `transient` asks for a later retry."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class Context:
    """What a running plugin may use: options, progress, artifacts, a logger.

    Built by the worker for each (job, plugin); plugins never construct one.
    """

    def __init__(
        self,
        *,
        job_id: str,
        input_key: str,
        options: Mapping[str, Any],
        progress: Callable[[float], None],
        artifact: Callable[[str], tuple[Path, str]],
        logger: logging.Logger,
    ):
        self.job_id = job_id
        self.input_key = input_key
        self.options = dict(options)
        self.log = logger
        self._progress = progress
        self._artifact = artifact
        self.artifacts: list[str] = []

    def progress(self, fraction: float) -> None:
        """Report progress of this plugin, 0.0 to 1.0 (cheap; throttled by the worker)."""
        self._progress(max(0.0, min(1.0, float(fraction))))

    def artifact(self, name: str) -> tuple[Path, str]:
        """A path to write an artifact file to, and its relative key (recorded for you).

        `name` may contain `/` for sub-folders; it cannot leave the job's folder.
        """
        path, key = self._artifact(name)
        self.artifacts.append(key)
        return path, key


class Plugin:
    """Convenience base class; any object with the same attributes works."""

    name: str = ""
    version: str = "0"
    description: str = ""
    defaults: Mapping[str, Any] = {}

    def run(self, video: Path, ctx: Context) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError
