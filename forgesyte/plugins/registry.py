"""Plugin discovery: built-ins plus the `forgesyte.plugins` entry-point group.

Three ways in, from cheapest to safest:

* `Loader` (the worker): imports a plugin the first time a job needs it, so a
  worker never imports plugins its jobs do not use;
* `discover()` (in-process): every plugin, each failure caught and listed;
* `probe()` (the daemon, `run`, `doctor`, `plugins`): `discover()` in a child
  process that reports plugin by plugin, so an import that segfaults, calls
  `os._exit` or hangs marks that plugin failed and the probe goes on with the
  others in a fresh child. The daemon never imports plugin code itself.

A plugin that fails to import is still listed, with its error; it never takes
the daemon down and costs only the jobs that use it.
"""

from __future__ import annotations

import importlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

from forgesyte.plugins.base import is_frame_plugin
from forgesyte.plugins.options import schema_of

ENTRY_POINT_GROUP = "forgesyte.plugins"

# name: (object reference, the extra that brings its dependencies or None)
BUILTINS: dict[str, tuple[str, str | None]] = {
    "metadata": ("forgesyte.plugins.builtin.metadata:MetadataPlugin", None),
    "scenes": ("forgesyte.plugins.builtin.scenes:ScenesPlugin", None),
    "motion": ("forgesyte.plugins.builtin.motion:MotionPlugin", None),
    "thumbnails": ("forgesyte.plugins.builtin.thumbnails:ThumbnailsPlugin", None),
    "faces": ("forgesyte.plugins.builtin.faces:FacesPlugin", None),
    "fingerprint": ("forgesyte.plugins.builtin.fingerprint:FingerprintPlugin", None),
    "ocr": ("forgesyte.plugins.builtin.ocr:OcrPlugin", "ocr"),
    "speech": ("forgesyte.plugins.builtin.speech:SpeechPlugin", "speech"),
}

PROBE_TIMEOUT = 120.0  # seconds one plugin's import may take in the probe


@dataclass
class PluginInfo:
    name: str
    version: str | None
    description: str | None
    plugin: Any | None
    error: str | None
    source: str
    options: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The public form (`plugins --json`)."""
        return {"name": self.name, "version": self.version, "description": self.description,
                "error": self.error}

    def as_probe(self) -> dict[str, Any]:
        """What probe() carries out of its child: the public form, the option schema, the kind."""
        kind = None if self.plugin is None else ("frames" if is_frame_plugin(self.plugin) else "file")
        cost = float(getattr(self.plugin, "cost", 1.0) or 0.0) if self.plugin is not None else None
        return {**self.as_json(), "options": self.options, "kind": kind, "cost": cost, "source": self.source}


def _instantiate(obj: Any) -> Any:
    plugin = obj() if isinstance(obj, type) else obj
    if not hasattr(plugin, "name"):
        raise TypeError("it has no 'name' attribute")
    if not (callable(getattr(plugin, "run", None)) or is_frame_plugin(plugin)):
        raise TypeError("it has neither run() nor analyze()")
    return plugin


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"its import called sys.exit({exc.code!r})"
    text = str(exc).strip()
    message = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _load(name: str, loader: Callable[[], Any], source: str, extra: str | None = None) -> PluginInfo:
    try:
        plugin = _instantiate(loader())
        options = schema_of(plugin)
    except BaseException as exc:  # an import may raise anything, sys.exit included
        if isinstance(exc, KeyboardInterrupt):
            raise
        error = _describe(exc)
        if extra and isinstance(exc, ImportError):
            error += f"; install the '{extra}' extra: pip install 'forgesyte[{extra}]'"
        return PluginInfo(name, None, None, None, error, source)
    return PluginInfo(name, str(getattr(plugin, "version", "0")), str(getattr(plugin, "description", "")),
                      plugin, None, source, options)


def _import_ref(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _sources() -> dict[str, tuple[Callable[[], Any], str, str | None]]:
    """Every plugin name -> (loader, source, extra); a third-party plugin cannot shadow a built-in."""
    found: dict[str, tuple[Callable[[], Any], str, str | None]] = {}
    for name, (ref, extra) in BUILTINS.items():
        found[name] = (lambda ref=ref: _import_ref(ref), "builtin", extra)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = (ep.load, f"entry point {ep.value}", None)
    return found


def names() -> list[str]:
    """Every installed plugin's name, without importing any plugin."""
    return list(_sources())


def discover(skip: set[str] | frozenset[str] = frozenset(),
             announce: Callable[[str], None] | None = None) -> dict[str, PluginInfo]:
    """Import every plugin in this process (each failure caught and listed)."""
    found: dict[str, PluginInfo] = {}
    for name, (loader, source, extra) in _sources().items():
        if name in skip:
            continue
        if announce:
            announce(name)
        found[name] = _load(name, loader, source, extra)
    return found


class Loader:
    """Plugins imported on first use, in this process (the worker's side)."""

    def __init__(self) -> None:
        self._loaded: dict[str, PluginInfo | None] = {}
        self._sources = _sources()

    def get(self, name: str) -> PluginInfo | None:
        """The plugin, loaded now if needed; None when no plugin has that name."""
        if name not in self._loaded:
            source = self._sources.get(name)
            self._loaded[name] = _load(name, *source) if source else None
        return self._loaded[name]


# -- probe: discover() in children, one crash costs one plugin ----------------------------

_CHILD = r"""
import json, os, sys
out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # whatever plugins print goes to stderr, not into our protocol
from forgesyte.plugins.registry import discover
skip = set(json.loads(sys.argv[1]))
def announce(name):
    out.write(json.dumps({"loading": name}) + "\n")
for info in discover(skip, announce).values():
    out.write(json.dumps({"info": info.as_probe()}) + "\n")
out.write(json.dumps({"done": True}) + "\n")
"""


class DiscoveryFailed(Exception):
    pass


def _exit_reason(code: int | None) -> str:
    if code is None:
        return f"its import did not finish within {PROBE_TIMEOUT:g} s"
    if code < 0:
        try:
            return f"its import crashed the process ({signal.Signals(-code).name})"
        except ValueError:
            return f"its import crashed the process (signal {-code})"
    return f"its import ended the process (exit code {code})"


def _probe_child(skip: set[str]) -> tuple[list[dict[str, Any]], str | None, int | None, bool]:
    """One child: (infos reported, plugin it was loading when it died, exit code, finished)."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(sorted(skip))],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    infos: list[dict[str, Any]] = []
    loading: str | None = None
    buffer = b""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + PROBE_TIMEOUT
    finished = False
    try:
        while not finished:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                proc.kill()
                proc.wait()
                return infos, loading, None, False
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                if "loading" in message:
                    loading, deadline = message["loading"], time.monotonic() + PROBE_TIMEOUT
                elif "info" in message:
                    infos.append(message["info"])
                    loading = None
                elif message.get("done"):
                    finished = True
    finally:
        selector.close()
        proc.stdout.close()
    code = proc.wait()
    return infos, loading, code, finished and code == 0


def probe() -> dict[str, dict[str, Any]]:
    """Every plugin as `PluginInfo.as_probe()` dicts, by name, each imported in a child
    process; a plugin whose import kills or hangs its child is reported with that error
    and the others are probed in a fresh child."""
    result: dict[str, dict[str, Any]] = {}
    for _ in range(len(BUILTINS) + 64):  # at most one fresh child per plugin that kills one
        infos, loading, code, finished = _probe_child(set(result))
        for info in infos:
            result[info["name"]] = info
        if finished:
            return result
        if loading is None:
            raise DiscoveryFailed(f"Loading the plugins crashed ({_exit_reason(code)}).")
        result[loading] = {"name": loading, "version": None, "description": None, "error": _exit_reason(code),
                           "options": {}, "kind": None, "cost": None, "source": "unknown"}
    raise DiscoveryFailed("Loading the plugins kept crashing.")
