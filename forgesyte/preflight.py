"""A configuration checked against the installed plugins before anything runs.

`run`, a reload (SIGHUP) and `doctor` ask the same questions, so a misspelt
plugin or option, or a value the plugin would refuse, is one sentence at
start naming the setting and the file, rather than every job failing later.
The plugins' option schemas come from `probe()` (a child process): checking
never imports plugin code into the daemon.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from forgesyte.config import Settings


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)  # refuse to start (exit 2) / keep the old config
    warnings: list[str] = field(default_factory=list)  # start anyway, say so


def _where(settings: Settings) -> str:
    return f" in {settings.config_file}" if settings.config_file else ""


def _unknown_plugin(name: str, place: str, available: Mapping[str, Any]) -> str:
    guess = difflib.get_close_matches(name, sorted(available), n=1, cutoff=0.6)
    hint = f"did you mean '{guess[0]}'?" if guess else f"installed: {', '.join(sorted(available))}."
    return f"Unknown plugin '{name}' in {place.strip()}; {hint}"


def summary(errors: list[str]) -> str:
    """Several problems as one message: the first, and how many more (doctor lists all)."""
    if len(errors) == 1:
        return errors[0]
    more = len(errors) - 1
    return f"{errors[0]} (and {more} more problem{'s' if more > 1 else ''}: `forgesyte doctor` lists them)"


def check_plugins(settings: Settings, available: Mapping[str, Mapping[str, Any]]) -> Findings:
    """Plugin names in the chain and the rules, and every option table, against `available`
    (probe()'s answer: name -> {"error", "options": schema, ...})."""
    from forgesyte.plugins.options import check_options

    found = Findings()
    where = _where(settings)
    places: list[tuple[str, tuple[str, ...]]] = [
        (f"setting 'plugins'{settings.sources.get('plugins', '')}", settings.plugins)]
    places += [(f"rule {n} (match {rule.match!r}){where}", rule.plugins)
               for n, rule in enumerate(settings.rules, 1)]
    broken: set[str] = set()
    for place, names in places:
        for name in names:
            if name not in available:
                found.errors.append(_unknown_plugin(name, place, available))
            elif available[name].get("error") and name not in broken:
                broken.add(name)
                found.warnings.append(f"Plugin '{name}' cannot be loaded ({available[name]['error']}); "
                                      "its jobs will fail until it is fixed.")
    tables: list[tuple[str, str, Mapping[str, Any]]] = [
        (name, f"[plugin.{name}]{where}", given) for name, given in settings.plugin_options.items()]
    for n, rule in enumerate(settings.rules, 1):
        tables += [(name, f"options.{name} of rule {n} (match {rule.match!r}){where}", given)
                   for name, given in rule.options.items()]
    for name, place, given in tables:
        if name not in available:
            found.errors.append(_unknown_plugin(name, place, available))
            continue
        schema = available[name].get("options")
        if schema is None or available[name].get("error"):
            continue  # nothing declared (or not loadable): nothing to check against
        found.errors.extend(check_options(schema, given, place))
    return found
