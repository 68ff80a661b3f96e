"""The `forgesyte` command: click commands only (parse, call one function, render).

This module holds the group, the error handling and the helpers every command
shares; the commands live in the modules imported at the bottom, by topic.

Errors are one sentence on stderr with the contract's exit code, never a
traceback: 1 for a bad job or argument, 2 for bad configuration (and for any
usage error of `run`, which is configuration too).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from forgesyte import __version__
from forgesyte.config import ConfigError, Settings, load_settings, prepare_directories

EXIT_USER = 1
EXIT_CONFIG = 2


class UserError(click.ClickException):
    exit_code = EXIT_USER

    def show(self, file=None) -> None:
        click.echo(self.format_message(), err=True)


class ConfigFailure(UserError):
    exit_code = EXIT_CONFIG


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text if text.endswith((".", "!", "?")) else text + "."


class ForgesyteGroup(click.Group):
    """Turns every failure into one sentence on stderr and the right exit code."""

    def main(self, args=None, prog_name="forgesyte", **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.UsageError as exc:
            is_run = exc.ctx is not None and exc.ctx.command.name == "run"
            click.echo(_sentence(exc.format_message()) + " See 'forgesyte --help'.", err=True)
            sys.exit(EXIT_CONFIG if is_run else EXIT_USER)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:
            # Output closed early (e.g. piped into head): not an error worth a sentence.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except Exception as exc:  # last resort: still one sentence, never a traceback
            logging.getLogger("forgesyte").debug("unexpected error", exc_info=True)
            click.echo(_sentence(f"Unexpected error: {type(exc).__name__}: {exc}"), err=True)
            sys.exit(EXIT_USER)
        sys.exit(rv if isinstance(rv, int) else 0)


def _settings(ctx: click.Context, **flags: Any) -> Settings:
    try:
        return load_settings({**ctx.obj, **flags})
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None


def _ready_dirs(settings: Settings, create: bool) -> None:
    try:
        # Reads neither create nor need write access; a path that is not a directory is still wrong.
        prepare_directories(settings, create=create, missing_ok=not create, writable=create)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None


def _store(settings: Settings):
    from forgesyte.storage.jobs import JobStore
    from forgesyte.storage.tinystore import StoreCorrupt

    try:
        return JobStore(settings.state, readonly=True)
    except StoreCorrupt as exc:
        raise UserError(str(exc)) from None


def _emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2 if sys.stdout.isatty() else None, ensure_ascii=False))


def _resolve(store, ref: str, settings=None) -> dict[str, Any]:
    from forgesyte.storage.jobs import AmbiguousJob, JobNotFound
    from forgesyte.storage.paths import key_spellings

    spellings = key_spellings(ref)
    try:
        return store.resolve(spellings[0])
    except AmbiguousJob as exc:
        raise UserError(str(exc)) from None
    except JobNotFound as exc:
        first = exc
    for spelling in spellings[1:]:
        try:
            return store.resolve(spelling)
        except (JobNotFound, AmbiguousJob):
            pass
    raise UserError(str(first)) from None


@click.group(cls=ForgesyteGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="forgesyte")
@click.option("--home", type=click.Path(path_type=Path), help="Parent of inbox/output/state. Env: FORGESYTE_HOME.")
@click.option("--inbox", type=click.Path(path_type=Path), help="Watched folder. Env: FORGESYTE_INBOX.")
@click.option("--output", type=click.Path(path_type=Path), help="Results folder. Env: FORGESYTE_OUTPUT.")
@click.option("--state", type=click.Path(path_type=Path), help="Database, lock and pid. Env: FORGESYTE_STATE.")
@click.option("--config", type=click.Path(path_type=Path), help="TOML settings file. Env: FORGESYTE_CONFIG.")
@click.pass_context
def cli(ctx: click.Context, **flags: Any) -> None:
    """ForgeSyte: drop videos into the inbox, get JSON results out."""
    ctx.obj = {k: v for k, v in flags.items() if v is not None}


def main() -> None:
    os.umask(0o027)
    cli.main(prog_name="forgesyte")


# Register the commands (each module adds its own to `cli`).
from forgesyte.cli import admin, daemon, jobs, plugins, service  # noqa: E402,F401
