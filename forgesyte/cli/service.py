"""`service install`: a systemd unit for this configuration (the daemon's, or a cluster worker's)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from forgesyte.cli import ConfigFailure, UserError, cli
from forgesyte.config import (
    ConfigError,
    Settings,
    load_settings,
    parse_scheduler_address,
)


def _unit_settings(ctx: click.Context, user_unit: bool, scheduler: str | None) -> Settings:
    """The configured directories, with a system unit's own default home.

    Run as root, the ordinary default home would be /root/.local/share, which
    the service account cannot reach. A system unit's home, when none is named
    (--home, FORGESYTE_HOME, the config file's `home` still win, as for every
    command), is the inbox's parent folder when the inbox is named (output and
    state next to the videos: `--inbox /srv/videos/inbox` gives /srv/videos/output
    and /srv/videos/state), else the folder systemd makes for the service,
    /var/lib/forgesyte (StateDirectory=forgesyte).
    """
    from forgesyte.daemon.unit import SYSTEM_HOME

    def load(home_default: Path | None) -> Settings:
        env = dict(os.environ)
        if home_default is not None:
            env["STATE_DIRECTORY"] = str(home_default)
        settings = load_settings(dict(ctx.obj), env)
        if scheduler:
            settings = settings.with_overrides(scheduler=parse_scheduler_address(scheduler))
        return settings

    try:
        if user_unit:
            return load(None)
        probe = Path("/nonexistent/forgesyte-default-home")  # tells a named home from the default
        settings = load(probe)
        if settings.home != probe:
            return settings
        named_inbox = settings.inbox != probe / "inbox"
        return load(settings.inbox.parent if named_inbox else SYSTEM_HOME)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None


@cli.group()
def service() -> None:
    """Run ForgeSyte under systemd."""


@service.command("install")
@click.option("--user", "user_unit", is_flag=True, help="A user unit (~/.config/systemd/user), no root needed.")
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of writing it.")
@click.option("--unit-dir", type=click.Path(path_type=Path), help="Where to write the unit file.")
@click.option("--service-user", default="forgesyte", show_default=True, help="System unit: the account to run as.")
@click.option("--worker", is_flag=True, help="A unit for `forgesyte worker` (a cluster machine), not the daemon.")
@click.option("--scheduler", metavar="ADDR", help="The Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: setting 'scheduler').")
@click.option("--allow", multiple=True, metavar="NET",
              help="Cluster units: addresses the unit may reach besides the scheduler (IPAddressAllow=), e.g. 10.0.0.0/24. Repeatable.")
@click.pass_context
def service_install(ctx: click.Context, user_unit: bool, print_only: bool, unit_dir: Path | None,
                    service_user: str, worker: bool, scheduler: str | None, allow: tuple[str, ...]) -> None:
    """Write a systemd unit for the configured directories, and say how to enable it."""
    from forgesyte.daemon.unit import (
        DAEMON_UNIT,
        WORKER_UNIT,
        UnitError,
        render,
        render_worker,
    )
    from forgesyte.daemon.unit import unit_dir as default_unit_dir

    settings = _unit_settings(ctx, user_unit, scheduler)
    exec_start = f"{sys.executable} -m forgesyte"
    try:
        if worker:
            if not settings.scheduler:
                raise UserError("A worker unit needs the scheduler's address: --scheduler tcp://HOST:8786.")
            name = WORKER_UNIT
            text = render_worker(settings, exec_start, settings.scheduler, user_unit=user_unit,
                                 service_user=service_user, origin=" on this machine", allow=allow)
            dirs = [settings.output]
        else:
            if allow and not settings.scheduler:
                raise UserError("--allow opens the network to a Dask cluster; without a scheduler the daemon needs none.")
            name = DAEMON_UNIT
            text = render(settings, exec_start, user_unit=user_unit, service_user=service_user,
                          origin=" on this machine", allow=allow)
            dirs = [settings.inbox, settings.output, settings.state]
    except UnitError as exc:
        raise UserError(str(exc)) from None
    if print_only:
        click.echo(text, nl=False)
        return
    folder = unit_dir or default_unit_dir(user_unit)
    path = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)  # systemd warns about (and tools cannot read) a unit root's umask closed
    except OSError as exc:
        raise UserError(f"Cannot write {path}: {exc.strerror} (a system unit needs root; try --user).") from None
    ctl = "systemctl --user" if user_unit else "systemctl"
    unit = name.removesuffix(".service")
    click.echo(f"Wrote {path}.")
    if not user_unit:
        listed = " ".join(str(d) for d in dirs)
        click.echo(f"Create the account and hand it the directories (once):\n"
                   f"  useradd --system --no-create-home --shell /usr/sbin/nologin {service_user}\n"
                   f"  mkdir -p {listed} && chown -R {service_user}: {listed}")
    click.echo(f"Then:\n  {ctl} daemon-reload\n  {ctl} enable --now {unit}\n"
               f"  {ctl} status {unit}\n  journalctl {'--user-unit' if user_unit else '-u'} {unit} -f")
