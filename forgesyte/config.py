"""One Settings object for the whole program.

Every directory is resolved to an absolute path exactly once, here, at start.
Everything downstream receives those absolute roots and stores only keys
relative to them (see forgesyte.storage.paths), so moving the home never
breaks a stored record.

Precedence, highest first: command-line flags, FORGESYTE_* environment
variables, the TOML file named by --config / FORGESYTE_CONFIG, defaults.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

DIR_MODE = 0o750

DEFAULT_VIDEO_EXTENSIONS = (
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg",
    "ts", "mts", "m2ts", "wmv", "flv", "3gp",
)
DEFAULT_IGNORE_PATTERNS = (
    ".*", "*.part", "*.partial", "*.tmp", "*.crdownload", "*.download", "~*",
)
DEFAULT_PLUGINS = ("metadata",)


class ConfigError(Exception):
    """A setting is unusable; the message is one sentence for the user (exit 2)."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | float | int) -> float:
    """'90s', '15m', '12h', '30d', '2w' (or a number of seconds) -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        value = str(text).strip().lower()
        unit = value[-1:] if value[-1:] in _UNITS else "s"
        number = value[:-1] if value[-1:] in _UNITS else value
        try:
            seconds = float(number) * _UNITS[unit]
        except ValueError:
            raise ConfigError(
                f"{text!r} is not a duration; use a number with s, m, h, d or w, e.g. 30d."
            ) from None
    if seconds <= 0:
        raise ConfigError(f"A duration must be positive, not {text!r}.")
    return seconds


_SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")


def parse_scheduler_address(text: Any, name: str = "scheduler") -> str:
    """'tcp://host:port' (or 'host:port', taken as tcp) -> the normalised address.

    Checked here, at start, so a typo is one sentence at `run` rather than a
    connection error minutes later; whether the scheduler answers is the
    cluster executor's business.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"Setting '{name}' must be an address like tcp://host:8786, not {text!r}.")
    value = text.strip()
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "tcp", value
    scheme = scheme.lower()
    host, colon, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if (
        scheme not in _SCHEDULER_SCHEMES
        or not colon
        or not host
        or any(c in host for c in "/ ?#@")
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        raise ConfigError(
            f"Setting '{name}' must be an address like tcp://host:8786 "
            f"(schemes: {', '.join(_SCHEDULER_SCHEMES)}), not {text!r}."
        )
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{int(port)}"


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern:
    """A path glob as a regex: `*` and `?` stay within one folder, `**` crosses folders
    (`a/**/b` also matches `a/b`), `[...]` is a character class."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and pattern.find("]", i + 2) != -1:
            end = pattern.find("]", i + 2)  # a ']' right after '[' is part of the class
            body = pattern[i + 1:end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def match_key(pattern: str, key: str) -> bool:
    """Whether an inbox key matches a rule's glob (see _glob_regex)."""
    return _glob_regex(pattern).match(key) is not None


@dataclass(frozen=True)
class Rule:
    """Inputs whose key matches `match` get these plugins. `*` matches within one folder
    (`cameras/*` is the files directly in cameras/), `**` any depth (`cameras/**`)."""

    match: str
    plugins: tuple[str, ...]
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    home: Path
    inbox: Path
    output: Path
    state: Path
    plugins: tuple[str, ...] = DEFAULT_PLUGINS
    workers: int = 2
    video_extensions: tuple[str, ...] = DEFAULT_VIDEO_EXTENSIONS
    ignore_patterns: tuple[str, ...] = DEFAULT_IGNORE_PATTERNS
    # A file is taken once it has not changed for this many seconds.
    settle_seconds: float = 2.0
    # A file held open this long without changing is taken anyway (lost close events, readers).
    open_timeout: float = 300.0
    # Full inbox re-scan interval, a safety net for lost events.
    scan_interval: float = 300.0
    polling: bool = False
    polling_interval: float = 5.0
    max_attempts: int = 3
    plugin_timeout: float = 600.0
    # Address-space limit per worker process in MB (None: unlimited).
    worker_memory_mb: int | None = None
    # First wait before re-running a job whose plugin failed transiently; doubles each time.
    retry_backoff: float = 5.0
    # On stop, running jobs get this long to finish before they go back to pending.
    stop_grace: float = 20.0
    rules: tuple[Rule, ...] = ()
    # Finished jobs older than this many seconds are pruned by the daemon (None: keep all).
    retention: float | None = None
    retention_outputs: bool = False
    plugin_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Dask scheduler address (e.g. tcp://10.0.0.5:8786): jobs run on that cluster (None: local).
    scheduler: str | None = None
    config_file: Path | None = None
    # Where each explicitly set value came from, for messages: " in FILE", " (from --workers)".
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def with_overrides(self, **changes: Any) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def chain_for(self, input_key: str) -> tuple[tuple[str, ...], dict[str, dict[str, Any]]]:
        """(plugins, options by plugin) for an input: the first matching rule, else the chain."""
        options = {name: dict(opts) for name, opts in self.plugin_options.items()}
        for rule in self.rules:
            if match_key(rule.match, input_key):
                for name, opts in rule.options.items():
                    options[name] = {**options.get(name, {}), **opts}
                return rule.plugins, options
        return self.plugins, options

    def all_plugin_names(self) -> set[str]:
        return set(self.plugins).union(*(set(rule.plugins) for rule in self.rules))


def default_home(env: Mapping[str, str]) -> Path:
    """$FORGESYTE_HOME, else systemd's $STATE_DIRECTORY, else XDG data home."""
    if env.get("FORGESYTE_HOME"):
        return Path(env["FORGESYTE_HOME"])
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several colon-separated directories; the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    xdg = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "share")
    return Path(xdg) / "forgesyte"


def _absolute(path: Path | str) -> Path:
    # abspath, not resolve(): a symlinked home stays as the user named it, but
    # the value is absolute and fixed from here on.
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"Configuration file {path} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Configuration file {path} is not valid TOML: {exc}.") from None
    except OSError as exc:
        raise ConfigError(f"Configuration file {path} cannot be read: {exc.strerror}.") from None


def _as_list(value: Any, label: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{label} must be a list of strings, not {value!r}.")
    return tuple(v for v in value if v)


def _as_number(value: Any, label: str, kind: type, minimum: float) -> Any:
    if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{label} must be a whole number, not {value!r}.")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{label} must be a number, not {value!r}.") from None
    if number != number or number < minimum:  # NaN, or below the minimum
        raise ConfigError(f"{label} must be at least {minimum:g}, not {value!r}.")
    return number


def _as_bool(value: Any, label: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{label} must be true or false, not {value!r}.")


_FILE_KEYS = {f.name for f in fields(Settings)} - {"config_file", "plugin_options", "rules", "sources"}
_FILE_TABLES = ("plugin", "plugin_options", "rules")


def _unknown(kind: str, name: str, known: Iterable[str], origin: Path) -> ConfigError:
    guess = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f"; did you mean '{guess[0]}'?" if guess else "."
    return ConfigError(f"Unknown {kind} '{name}' in {origin}{hint}")


def _parse_rules(raw: Any, origin: Path) -> tuple[Rule, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"'rules' in {origin} must be an array of tables ([[rules]]).")
    rules = []
    for number, item in enumerate(raw, 1):
        if not isinstance(item, dict) or not isinstance(item.get("match"), str):
            raise ConfigError(f"Rule {number} in {origin} needs a 'match' glob.")
        plugins = _as_list(item.get("plugins", []), f"'plugins' of rule {number} in {origin}")
        if not plugins:
            raise ConfigError(f"Rule {number} in {origin} names no plugin.")
        options = item.get("options", {})
        if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
            raise ConfigError(f"Rule {number} in {origin}: 'options' must map plugin names to tables.")
        for key in item:
            if key not in ("match", "plugins", "options"):
                raise _unknown(f"key of rule {number}", key, ("match", "plugins", "options"), origin)
        rules.append(Rule(item["match"], plugins, options))
    return tuple(rules)


_ENV_KEYS = {
    "inbox": "FORGESYTE_INBOX",
    "output": "FORGESYTE_OUTPUT",
    "state": "FORGESYTE_STATE",
    "plugins": "FORGESYTE_PLUGINS",
    "workers": "FORGESYTE_WORKERS",
    "scheduler": "FORGESYTE_SCHEDULER",
}
_DIRS = ("home", "inbox", "output", "state")


def _read_file(config_path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], tuple[Rule, ...]]:
    """(settings, plugin options, rules) from the TOML file; relative directories in it
    are taken relative to the file's own folder, wherever the command runs from."""
    raw = _read_toml(config_path)
    section = raw.get("forgesyte", raw)
    values: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    rules: tuple[Rule, ...] = ()
    for key, value in section.items():
        if key == "rules":
            rules = _parse_rules(value, config_path)
        elif key in ("plugin_options", "plugin"):
            if not isinstance(value, dict):
                raise ConfigError(f"'{key}' in {config_path} must be a table of plugin names ([plugin.NAME]).")
            for name, table in value.items():
                if not isinstance(table, dict):
                    raise ConfigError(f"[plugin.{name}] in {config_path} must be a table of options.")
                options[name] = dict(table)
        elif key not in _FILE_KEYS:
            raise _unknown("table" if isinstance(value, dict) else "setting", key,
                           _FILE_KEYS | set(_FILE_TABLES), config_path)
        elif key in _DIRS and isinstance(value, str):
            values[key] = config_path.parent / os.path.expanduser(value)
        else:
            values[key] = value
    return values, options, rules


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Merge flags > environment > TOML file > defaults into absolute Settings.

    Does not touch the filesystem beyond reading the config file; call
    `prepare_directories` before using the directories. Every error names the
    setting and where its value came from (the file, the variable or the flag).
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if env is None else env

    config_path = flags.get("config") or env.get("FORGESYTE_CONFIG")
    file_values: dict[str, Any] = {}
    plugin_options: dict[str, dict[str, Any]] = {}
    rules: tuple[Rule, ...] = ()
    if config_path:
        config_path = _absolute(config_path)
        file_values, plugin_options, rules = _read_file(config_path)

    merged: dict[str, Any] = dict(file_values)
    origin: dict[str, str] = {key: f" in {config_path}" for key in file_values}
    for key, var in _ENV_KEYS.items():
        if env.get(var):
            merged[key], origin[key] = env[var], f" (from {var})"
    for key, value in flags.items():
        if key != "config":
            merged[key], origin[key] = value, f" (from --{key.replace('_', '-')})"

    def label(name: str) -> str:
        return f"Setting '{name}'{origin.get(name, '')}"

    home = _absolute(
        flags.get("home") or env.get("FORGESYTE_HOME") or file_values.get("home") or default_home(env)
    )

    values: dict[str, Any] = {
        "home": home,
        "inbox": _absolute(merged.get("inbox") or home / "inbox"),
        "output": _absolute(merged.get("output") or home / "output"),
        "state": _absolute(merged.get("state") or home / "state"),
        "config_file": config_path or None,
        "plugin_options": plugin_options,
        "rules": rules,
        "sources": origin,
    }
    if "plugins" in merged:
        values["plugins"] = _as_list(merged["plugins"], label("plugins"))
        if not values["plugins"]:
            raise ConfigError(f"{label('plugins')} names no plugin.")
    if "video_extensions" in merged:
        values["video_extensions"] = tuple(
            e.lower().lstrip(".") for e in _as_list(merged["video_extensions"], label("video_extensions"))
        )
    if "ignore_patterns" in merged:
        values["ignore_patterns"] = _as_list(merged["ignore_patterns"], label("ignore_patterns"))
    for name, kind, minimum in (
        ("workers", int, 1),
        ("max_attempts", int, 1),
        ("settle_seconds", float, 0.0),
        ("open_timeout", float, 0.0),
        ("scan_interval", float, 1.0),
        ("polling_interval", float, 0.1),
        ("plugin_timeout", float, 0.1),
        ("retry_backoff", float, 0.0),
        ("stop_grace", float, 0.0),
        ("worker_memory_mb", int, 64),
    ):
        if name in merged:
            values[name] = _as_number(merged[name], label(name), kind, minimum)
    for name in ("polling", "retention_outputs"):
        if name in merged:
            values[name] = _as_bool(merged[name], label(name))
    if merged.get("retention") not in (None, "", "never"):
        try:
            values["retention"] = parse_duration(merged["retention"])
        except ConfigError as exc:
            raise ConfigError(f"{label('retention')}: {str(exc)[0].lower()}{str(exc)[1:]}") from None
    if merged.get("scheduler") not in (None, ""):
        try:
            values["scheduler"] = parse_scheduler_address(merged["scheduler"])
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("Setting 'scheduler'", label("scheduler"), 1)) from None
    _check_nesting(values, label)
    return Settings(**values)


def _check_nesting(values: dict[str, Any], label) -> None:
    """The inbox is watched recursively: the output or state inside it (or it inside
    them, or the same folder) would make the daemon read its own writes as input."""
    def real(path: Path) -> str:
        return os.path.realpath(path)

    inbox = real(values["inbox"])
    for other in ("output", "state"):
        there = real(values[other])
        if there == inbox:
            raise ConfigError(f"{label('inbox')} and {label(other)[0].lower()}{label(other)[1:]} are the "
                              f"same folder ({values['inbox']}); they must be separate folders.")
        for inner, outer, a, b in ((there, inbox, other, "inbox"), (inbox, there, "inbox", other)):
            if inner.startswith(outer.rstrip(os.sep) + os.sep):
                raise ConfigError(f"The {a} folder {values[a]} lies inside the {b} folder {values[b]}; "
                                  "the inbox and the output or state folders must not contain each other.")


def prepare_directories(
    settings: Settings, create: bool = True, *, missing_ok: bool = False, writable: bool = True
) -> list[str]:
    """Create missing directories (0750) and check each is a (writable) directory.

    Raises ConfigError with one sentence naming the bad path. With
    `missing_ok`, a directory that does not exist is not an error: its name
    is returned instead (readers and `doctor` use that).
    """
    missing = []
    for name in ("inbox", "output", "state"):
        path: Path = getattr(settings, name)
        if create and not os.path.lexists(path):
            try:
                os.makedirs(path, mode=DIR_MODE, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"Cannot create the {name} directory {path}: {exc.strerror}."
                ) from None
        if not path.exists():
            if missing_ok:
                missing.append(name)
                continue
            raise ConfigError(f"The {name} directory {path} does not exist.")
        if not path.is_dir():
            raise ConfigError(f"The {name} path {path} exists but is not a directory.")
        if writable:
            _check_writable(name, path)
    return missing


def _check_writable(name: str, path: Path) -> None:
    """Really create a file: os.access() says yes to root on read-only mounts."""
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(
            f"The {name} directory {path} is not writable by this user ({exc.strerror})."
        ) from None
