"""`plugins`: what is installed."""

from __future__ import annotations


import click

from forgesyte.cli import _emit_json, cli


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document (a list) on stdout.")
def plugins(as_json: bool) -> None:
    """Installed plugins: name, version, description (and load errors)."""
    from forgesyte.plugins.registry import discover

    found = [info.as_json() for info in discover().values()]
    if as_json:
        _emit_json(found)
        return
    width = max(len(p["name"]) for p in found)
    for p in found:
        tail = f"LOAD ERROR: {p['error']}" if p["error"] else p["description"]
        click.echo(f"{p['name'].ljust(width)}  {str(p['version'] or '-').ljust(6)}  {tail}")


