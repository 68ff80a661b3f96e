"""`service install`: a systemd unit for this configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from forgesyte.cli import UserError, _settings, cli


@cli.group()
def service() -> None:
    """Run ForgeSyte under systemd."""


@service.command("install")
@click.option("--user", "user_unit", is_flag=True, help="A user unit (~/.config/systemd/user), no root needed.")
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of writing it.")
@click.option("--unit-dir", type=click.Path(path_type=Path), help="Where to write the unit file.")
@click.option("--service-user", default="forgesyte", show_default=True, help="System unit: the account to run as.")
@click.pass_context
def service_install(ctx: click.Context, user_unit: bool, print_only: bool, unit_dir, service_user: str) -> None:
    """Write a systemd unit for the configured directories, and say how to enable it."""
    from forgesyte.daemon.unit import render
    from forgesyte.daemon.unit import unit_dir as default_unit_dir

    settings = _settings(ctx)
    exec_start = f"{sys.executable} -m forgesyte"
    text = render(settings, exec_start, user_unit=user_unit, service_user=service_user,
                  origin=" on this machine")
    if print_only:
        click.echo(text, nl=False)
        return
    folder = unit_dir or default_unit_dir(user_unit)
    path = folder / "forgesyte.service"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise UserError(f"Cannot write {path}: {exc.strerror} (a system unit needs root; try --user).") from None
    ctl = "systemctl --user" if user_unit else "systemctl"
    click.echo(f"Wrote {path}.")
    if not user_unit:
        dirs = " ".join(str(d) for d in (settings.inbox, settings.output, settings.state))
        click.echo(f"Create the account and hand it the directories (once):\n"
                   f"  useradd --system --no-create-home --shell /usr/sbin/nologin {service_user}\n"
                   f"  mkdir -p {dirs} && chown -R {service_user}: {dirs}")
    click.echo(f"Then:\n  {ctl} daemon-reload\n  {ctl} enable --now forgesyte\n"
               f"  {ctl} status forgesyte\n  journalctl {'--user-unit' if user_unit else '-u'} forgesyte -f")


