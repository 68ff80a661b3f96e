"""`run`: the daemon in the foreground."""

from __future__ import annotations

import logging

import click

from forgesyte.cli import ConfigFailure, UserError, _ready_dirs, _settings, cli
from forgesyte.config import ConfigError, load_settings
from forgesyte.storage.errors import StateError

EXIT_STATE = 3  # the state is damaged: `forgesyte fsck --repair`


@cli.command()
@click.option("--once", is_flag=True, help="Process what is in the inbox now, wait for it, exit.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (default 2).")
@click.option("--plugins", help="Comma-separated plugin chain, e.g. metadata.")
@click.option("--polling", is_flag=True, default=None, help="Stat-polling observer, for NFS/CIFS inboxes.")
@click.option("--scheduler", metavar="ADDR",
              help="Run jobs on the Dask cluster at ADDR, e.g. tcp://10.0.0.5:8786. Env: FORGESYTE_SCHEDULER.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_default=True)
@click.pass_context
def run(ctx: click.Context, once: bool, workers, plugins, polling, scheduler, log_level: str) -> int:
    """Run the daemon in the foreground (logs to stderr)."""
    from forgesyte.daemon.service import AlreadyRunning, Daemon
    from forgesyte.plugins.registry import DiscoveryFailed, probe

    settings = _settings(ctx, workers=workers, plugins=plugins, polling=polling, scheduler=scheduler)
    try:
        available = probe()
    except DiscoveryFailed as exc:
        raise ConfigFailure(str(exc)) from None
    from forgesyte.preflight import check_plugins, summary

    findings = check_plugins(settings, available)
    if findings.errors:
        raise ConfigFailure(summary(findings.errors))
    _ready_dirs(settings, create=True)  # only a configuration that will run creates folders
    from forgesyte.daemon.systemd import configure_logging

    level = getattr(logging, log_level.upper())
    configure_logging(level)
    for warning in findings.warnings:
        logging.getLogger("forgesyte.daemon").warning("%s", warning)
    flags = dict(ctx.obj, workers=workers, plugins=plugins, polling=polling, scheduler=scheduler)
    try:
        return Daemon(settings, once=once, log_level=level,
                      reload=lambda: load_settings(flags), available=available).run()
    except (AlreadyRunning, ConfigError) as exc:  # ConfigError: e.g. --scheduler without the cluster extra
        raise ConfigFailure(str(exc)) from None
    except StateError as exc:  # a damaged state it cannot repair without risk: exit 3, no restart
        raise StateFailure(str(exc)) from None


class StateFailure(UserError):
    exit_code = EXIT_STATE
