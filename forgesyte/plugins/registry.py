"""Plugin discovery: built-ins plus the `forgesyte.plugins` entry-point group.

A plugin that fails to import is still listed, with its error, so
`forgesyte plugins` can show it; it never takes the daemon down.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "forgesyte.plugins"

BUILTINS = {
    "metadata": "forgesyte.plugins.builtin.metadata:MetadataPlugin",
    "scenes": "forgesyte.plugins.builtin.scenes:ScenesPlugin",
    "motion": "forgesyte.plugins.builtin.motion:MotionPlugin",
    "thumbnails": "forgesyte.plugins.builtin.thumbnails:ThumbnailsPlugin",
    "faces": "forgesyte.plugins.builtin.faces:FacesPlugin",
}


@dataclass
class PluginInfo:
    name: str
    version: str | None
    description: str | None
    plugin: Any | None
    error: str | None
    source: str

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "error": self.error,
        }


def _instantiate(obj: Any) -> Any:
    plugin = obj() if isinstance(obj, type) else obj
    for attr in ("name", "run"):
        if not hasattr(plugin, attr):
            raise TypeError(f"it has no '{attr}' attribute")
    return plugin


def _load(name: str, loader, source: str) -> PluginInfo:
    try:
        plugin = _instantiate(loader())
    except Exception as exc:  # any import-time failure is reported, not raised
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return PluginInfo(name, None, None, None, f"{type(exc).__name__}: {message}", source)
    return PluginInfo(
        name,
        str(getattr(plugin, "version", "0")),
        str(getattr(plugin, "description", "")),
        plugin,
        None,
        source,
    )


def _import_ref(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def discover() -> dict[str, PluginInfo]:
    """All plugins by name; a third-party plugin cannot shadow a built-in."""
    found: dict[str, PluginInfo] = {}
    for name, ref in BUILTINS.items():
        found[name] = _load(name, lambda ref=ref: _import_ref(ref), "builtin")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue
        found[ep.name] = _load(ep.name, ep.load, f"entry point {ep.value}")
    return found


_PROBE = (
    "import json; from forgesyte.plugins.registry import discover; "
    "print(json.dumps([info.as_json() for info in discover().values()]))"
)


class DiscoveryFailed(Exception):
    pass


def probe() -> dict[str, dict[str, Any]]:
    """discover(), run in a child process: the daemon never imports plugin code itself,
    so a plugin's import-time crash cannot take it down and its memory stays small."""
    import subprocess
    import sys

    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise DiscoveryFailed("Loading the plugins took more than 300 s.") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise DiscoveryFailed(f"Loading the plugins crashed ({detail}).")
    return {item["name"]: item for item in json.loads(proc.stdout.strip().splitlines()[-1])}
