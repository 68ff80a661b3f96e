"""Plugin options: how a plugin declares them, and how a configuration is checked.

A plugin declares its options as a dict of `Option`s (re-exported by
`forgesyte.plugins.base`); `schema_of(plugin)` turns that into plain JSON that
`probe()` carries out of the child process, so the daemon, `run`, reload and
`doctor` can check a configuration without importing any plugin code:

    options = {
        "threshold": Option(float, 10.0, min=0, max=100, help="scdet score of a cut"),
        "format": Option(str, "jpg", choices=("jpg", "webp")),
    }

    check_options(schema, {"threshhold": 5}, "[plugin.scenes] in /etc/forgesyte.toml")
    -> ["Unknown option 'threshhold' in [plugin.scenes] in /etc/forgesyte.toml; did you mean 'threshold'?"]

A plugin that declares only `defaults` (the older form) gets a schema inferred
from them: the names are the defaults' keys and each type that of its default.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

# JSON names of the types an option may have; `float` accepts integers too.
TYPES: dict[type, str] = {bool: "bool", int: "int", float: "float", str: "str", list: "list"}


@dataclass(frozen=True)
class Option:
    """One option: its type, its default, and optionally its allowed values or range."""

    type: type
    default: Any
    help: str = ""
    choices: Sequence[Any] | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise TypeError(f"option type must be one of {', '.join(t.__name__ for t in TYPES)}")

    def as_json(self) -> dict[str, Any]:
        return {"type": TYPES[self.type], "default": self.default, "help": self.help,
                "choices": list(self.choices) if self.choices is not None else None,
                "min": self.min, "max": self.max}


def _infer(value: Any) -> type:
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind
    return list


def declared(plugin: Any) -> dict[str, Option]:
    """The plugin's options: its `options` declaration, else inferred from `defaults`."""
    options = getattr(plugin, "options", None)
    if isinstance(options, Mapping) and options:
        return {str(k): v if isinstance(v, Option) else Option(_infer(v), v) for k, v in options.items()}
    defaults = getattr(plugin, "defaults", None) or {}
    return {str(k): Option(_infer(v), v) for k, v in dict(defaults).items()}


def defaults_of(plugin: Any) -> dict[str, Any]:
    """Default values of every declared option (merged under the configured ones)."""
    return {name: option.default for name, option in declared(plugin).items()}


def schema_of(plugin: Any) -> dict[str, dict[str, Any]]:
    """The JSON form of the plugin's options, as probe() reports it."""
    return {name: option.as_json() for name, option in declared(plugin).items()}


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, (list, tuple))
    return True


_ARTICLE = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "a string",
            "list": "a list"}


def _quoted(name: Any) -> str:
    """A name from a config file, quoted with control characters escaped (one line, always)."""
    text = str(name)
    return "'" + (text if text.isprintable() else text.encode("unicode_escape").decode("ascii")) + "'"


def check_options(schema: Mapping[str, Mapping[str, Any]], given: Mapping[str, Any], where: str) -> list[str]:
    """One sentence per problem with `given` against a plugin's `schema` (from probe());
    `where` names the place, e.g. "[plugin.thumbnails] in /etc/forgesyte.toml"."""
    problems: list[str] = []
    for name, value in given.items():
        spec = schema.get(name)
        shown = _quoted(name)
        if spec is None:
            guess = difflib.get_close_matches(str(name), list(schema), n=1, cutoff=0.6)
            if guess:
                hint = f"; did you mean '{guess[0]}'?"
            elif schema:
                hint = f"; known options: {', '.join(sorted(schema))}."
            else:
                hint = "; this plugin takes no options."
            problems.append(f"Unknown option {shown} in {where}{hint}")
            continue
        kind = spec.get("type", "str")
        if not _kind_ok(kind, value):
            problems.append(f"Option {shown} in {where} must be {_ARTICLE.get(kind, kind)}, not {value!r}.")
            continue
        choices = spec.get("choices")
        if choices is not None and value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            problems.append(f"Option {shown} in {where} must be one of {allowed}, not {value!r}.")
            continue
        low, high = spec.get("min"), spec.get("max")
        if kind in ("int", "float") and ((low is not None and value < low) or (high is not None and value > high)):
            if low is not None and high is not None:
                span = f"between {low:g} and {high:g}"
            elif low is not None:
                span = f"at least {low:g}"
            else:
                span = f"at most {high:g}"
            problems.append(f"Option {shown} in {where} must be {span}, not {value!r}.")
    return problems
