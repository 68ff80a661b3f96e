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
            from forgesyte.storage.errors import StateError

            if isinstance(exc, StateError):  # a damaged state file met mid-command: name it
                click.echo(str(exc), err=True)
                sys.exit(EXIT_USER)
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
    """Check the directories; only `run` creates them (create=True). Everything else
    reads, and a mistyped --home must not leave empty folders behind."""
    try:
        # Reads neither create nor need write access; a path that is not a directory is still wrong.
        prepare_directories(settings, create=create, missing_ok=not create, writable=create)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None


class EmptyStore:
    """The answers of a state that does not exist (yet): no jobs. Readers use it instead
    of opening a store, so a mistyped --home creates nothing and shows nothing."""

    def resolve(self, ref: str) -> dict[str, Any]:
        from forgesyte.storage.jobs import JobNotFound

        raise JobNotFound(f"No job matches {ref!r} (by id, id prefix or input path).")

    def get(self, job_id: str) -> dict[str, Any]:
        return self.resolve(job_id)

    def latest_for_input(self, key: str) -> None:
        return None

    def counts(self) -> dict[str, int]:
        from forgesyte.storage.jobs import STATUSES

        return {status: 0 for status in STATUSES}

    def newest(self, limit: int | None = None, status: str | None = None) -> list[dict[str, Any]]:
        return []

    def with_status(self, *statuses: str) -> list[dict[str, Any]]:
        return []


def _store(settings: Settings):
    """A read-only snapshot of the job store (an EmptyStore when there is no state folder)."""
    if not settings.state.is_dir():
        return EmptyStore()
    from forgesyte.storage.jobs import JobStore
    from forgesyte.storage.tinystore import StoreCorrupt

    try:
        return JobStore(settings.state, readonly=True)
    except StoreCorrupt as exc:
        raise UserError(str(exc)) from None


# Shell completion lives in forgesyte/cli/complete.py; JOB arguments use this one.
from forgesyte.cli.complete import complete_jobs as _complete_jobs  # noqa: E402


def lossless(text: str) -> str:
    """An argument as JSON can carry it: a non-UTF-8 name (surrogate-escaped by Python)
    becomes its key spelling (\\xHH), which JOB and PATH accept back."""
    if any("\udc80" <= char <= "\udcff" for char in text):
        from forgesyte.storage.paths import key_from_name

        return key_from_name(text)
    return text


def _emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2 if sys.stdout.isatty() else None, ensure_ascii=False))


def inbox_key(settings: Settings, path: str) -> str | None:
    """The inbox key of a filesystem path (absolute, or relative to the current directory),
    or None when it does not lie inside the inbox. Symlinks are not followed for the
    name itself; only the directories are compared resolved, so an inbox reached
    through a symlinked folder still matches."""
    from forgesyte.storage.paths import Root, UnsafeKey, key_from_name

    absolute = os.path.abspath(path)
    real_inbox = os.path.realpath(settings.inbox)
    # The current directory may be the inbox under another (resolved) name.
    parent = os.path.realpath(os.path.dirname(absolute))
    for where, root in ((absolute, str(settings.inbox)), (absolute, real_inbox),
                        (os.path.join(parent, os.path.basename(absolute)), real_inbox)):
        rel = os.path.relpath(where, root)
        if rel in (".", "..") or rel.startswith(".." + os.sep):
            continue
        try:
            return Root.check_key(key_from_name(rel.replace(os.sep, "/"))).as_posix()
        except UnsafeKey:
            return None
    return None


def path_key(settings: Settings, path: str) -> str | None:
    """PATH as `why` and `wait` take it: relative to the inbox first (the contract's form:
    as `list` shows it, or the raw bytes), else a path from here (or absolute) inside the inbox."""
    from forgesyte.storage.paths import Root, UnsafeKey, key_spellings

    relative = path
    while relative.startswith("./"):
        relative = relative[2:]
    relative = relative.strip("/")
    if os.path.isabs(path) or not relative:
        return inbox_key(settings, path)
    spellings = []
    for spelling in key_spellings(relative):
        try:
            Root.check_key(spelling)
        except UnsafeKey:
            continue
        spellings.append(spelling)
        if os.path.lexists(os.path.join(str(settings.inbox), _name_of(spelling))):
            return spelling
    if spellings and not os.path.lexists(path):
        return spellings[0]  # in neither place: the inbox-relative key (why says it is missing)
    return inbox_key(settings, path)


def _name_of(key: str) -> str:
    from forgesyte.storage.paths import name_from_key

    try:
        return name_from_key(key)
    except ValueError:
        return key


def _candidates(store, exc: Exception) -> str:
    """The ids an ambiguous prefix matches (AmbiguousJob.candidates), with their inputs."""
    from forgesyte.storage.jobs import JobNotFound
    from forgesyte.text import display

    ids = list(getattr(exc, "candidates", None) or [])
    shown = []
    for job_id in ids[:10]:
        try:
            shown.append(f"{job_id} ({display(store.get(job_id)['input'])})")
        except JobNotFound:
            shown.append(job_id)
    if len(ids) > 10:
        shown.append(f"and {len(ids) - 10} more")
    return ", ".join(shown)


def _resolve(store, ref: str, settings: Settings | None = None) -> dict[str, Any]:
    """JOB as people type it: an id, a unique id prefix, an input key, or a path to the
    input (absolute, or relative to the current directory) that lies inside the inbox."""
    from forgesyte.storage.jobs import AmbiguousJob, JobNotFound
    from forgesyte.storage.paths import key_spellings
    from forgesyte.text import display

    # A name's key as shown (list, JSON, the log: escapes), or the raw bytes of the name.
    spellings = key_spellings(ref)
    try:
        return store.resolve(spellings[0])
    except AmbiguousJob as exc:
        raise UserError(f"{display(repr(ref))} matches several jobs: {_candidates(store, exc)}; "
                        "give more of the id.") from None
    except JobNotFound as exc:
        first = exc
    for spelling in spellings[1:]:
        try:
            return store.resolve(spelling)
        except (JobNotFound, AmbiguousJob):
            pass
    hint = ""
    if settings is not None and ref:
        key = inbox_key(settings, ref)  # a path (its bytes, as a key) inside the inbox
        if key is not None and key != ref:
            try:
                return store.resolve(key)
            except (JobNotFound, AmbiguousJob):
                pass
        key = key or spellings[0]
        if not os.path.isabs(key) and os.path.lexists(os.path.join(str(settings.inbox), _name_of(key))):
            hint = f" {display(key)} is in the inbox but is not a job (yet); `forgesyte why` says why"
    raise UserError(display(str(first)).rstrip(".") + hint + ".") from None


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
    # Whatever the caller's umask, files the daemon or the CLI create are 0640, folders 0750.
    os.umask(0o027)
    cli.main(prog_name="forgesyte")


# Register the commands (each module adds its own to `cli`).
from forgesyte.cli import admin, analysis, cluster, daemon, follow, jobs, plugins, service, state  # noqa: E402,F401
