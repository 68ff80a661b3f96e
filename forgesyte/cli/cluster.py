"""`worker`: run jobs for a daemon on this machine, as a Dask worker."""

from __future__ import annotations

import logging
import os

import click

from forgesyte.cli import ConfigFailure, _settings, cli


@cli.command()
@click.option("--scheduler", metavar="ADDR",
              help="The daemon's Dask scheduler, e.g. tcp://10.0.0.5:8786. Env: FORGESYTE_SCHEDULER.")
@click.option("--nprocs", type=click.IntRange(min=1),
              help="Jobs this machine runs at once, each in its own process (default: the `workers` setting, 2).")
@click.option("--name", help="Worker name shown by Dask (default: host name and pid).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_default=True)
@click.pass_context
def worker(ctx: click.Context, scheduler: str | None, nprocs: int | None, name: str | None,
           log_level: str) -> int:
    """Run jobs for a daemon through its Dask scheduler.

    Keys are resolved against this machine's own --inbox and --output, which
    may be other mount points of the daemon's shared folders; the worker checks
    the daemon's marker in both before it starts and before every job.
    """
    settings = _settings(ctx, scheduler=scheduler)
    if not settings.scheduler:
        raise ConfigFailure("forgesyte worker needs the scheduler's address: --scheduler tcp://HOST:8786 "
                            "(or FORGESYTE_SCHEDULER).")
    for label, path in (("inbox", settings.inbox), ("output", settings.output)):
        # Never created here: a missing folder is an unmounted share, not an empty one.
        if not path.is_dir():
            raise ConfigFailure(f"The {label} folder {path} does not exist or is not a directory "
                                "(is the shared folder mounted?).")
    if not os.access(settings.output, os.W_OK):
        raise ConfigFailure(f"The output folder {settings.output} is not writable by this user.")
    from forgesyte.daemon import clusterworker
    from forgesyte.daemon.clustermarker import NotShared
    from forgesyte.plugins.registry import DiscoveryFailed

    try:
        identity, available = clusterworker.preflight(settings.inbox, settings.output)
    except (NotShared, DiscoveryFailed) as exc:
        raise ConfigFailure(str(exc)) from None
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ConfigFailure(f"forgesyte worker needs the cluster extra "
                            f"(pip install 'forgesyte[cluster]'): {exc}.") from None
    problem = clusterworker.tls_problem(settings.scheduler, "worker")
    if problem:
        raise ConfigFailure(problem)
    from forgesyte.daemon.systemd import configure_logging

    level = getattr(logging, log_level.upper())
    configure_logging(level)
    try:
        return clusterworker.serve(settings.scheduler, settings.inbox, settings.output,
                                   nprocs or settings.workers, level, identity, available, name)
    except NotShared as exc:
        raise ConfigFailure(str(exc)) from None
