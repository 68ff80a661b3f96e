"""`plugins`: what is installed, and which plugins fail to load (and why).

Plugins are imported in a child process (registry.probe), one by one: a
plugin whose import raises, calls sys.exit or segfaults is listed with its
error and the others are listed as usual; this command never dies with it.
"""

from __future__ import annotations

import click

from forgesyte.cli import UserError, _emit_json, cli
from forgesyte.text import display


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document (a list) on stdout.")
def plugins(as_json: bool) -> None:
    """Installed plugins: name, version, description (and load errors)."""
    from forgesyte.plugins.registry import DiscoveryFailed, probe

    try:
        found = list(probe().values())
    except DiscoveryFailed as exc:
        raise UserError(str(exc)) from None
    public = [{key: p.get(key) for key in ("name", "version", "description", "error")} for p in found]
    if as_json:
        _emit_json(public)
        return
    width = max(len(p["name"]) for p in public)
    for p in public:
        tail = f"LOAD ERROR: {p['error']}" if p["error"] else p["description"]
        click.echo(display(f"{p['name'].ljust(width)}  {str(p['version'] or '-').ljust(6)}  {tail}"))
