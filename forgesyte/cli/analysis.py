"""`similar`: finished jobs whose video is nearly the same as this one's (forgesyte/similar.py)."""

from __future__ import annotations

import click

from forgesyte.cli import UserError, _complete_jobs, _emit_json, _ready_dirs, _resolve, _settings, _store, cli


@cli.command()
@click.argument("job", shell_complete=_complete_jobs)
@click.option("--max-distance", type=click.FloatRange(min=0, max=64), default=None,
              help="Largest distance in bits (of 64) to list; default 10.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def similar(ctx: click.Context, job: str, max_distance: float | None, as_json: bool) -> None:
    """Finished jobs with nearly the same video (re-encodes, resizes, trims), nearest first.

    Needs the `fingerprint` plugin in both jobs' chains. Distance: the median,
    over sampled frames, of the bits (of 64) by which the nearest perceptual
    hashes differ; 0-4 is the same footage, unrelated videos are 20 or more apart.
    """
    from forgesyte import similar as fp
    from forgesyte.storage.results import ResultStore
    from forgesyte.text import display

    settings = _settings(ctx)
    _ready_dirs(settings, create=False)
    store = _store(settings)
    record = _resolve(store, job, settings)
    if record["status"] != "completed":
        raise UserError(f"Job {record['id']} is {record['status']}, not completed.")
    limit = fp.DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
    results = ResultStore(settings.output)
    completed = store.with_status("completed")
    try:
        entries = fp.read_index(settings.state)
    except fp.IndexDamaged as exc:
        # Derived data: only the daemon rewrites it; meanwhile read the documents themselves.
        # One sentence naming the file relative to the state folder; the answer still comes.
        click.echo(display(f"The state file {exc.name} {exc.problem}; answering from the results "
                           "documents instead (it is derived data: the daemon rebuilds it)."), err=True)
        entries = fp.entries_from_results(completed, results)
    query = next((e for e in entries if e["job_id"] == record["id"]), None)
    if query is None:
        found = fp.entries_from_results([record], results)
        query = found[0] if found else None
    if query is None:
        raise UserError(f"Job {record['id']} has no fingerprint: its chain did not run the 'fingerprint' "
                        "plugin (add it to the plugins, then `forgesyte rerun` the job).")
    matches = fp.nearest(query, entries, limit, alive={j["id"] for j in completed})
    if as_json:
        _emit_json({"job": {"id": record["id"], "input": record["input"]}, "max_distance": limit,
                    "similar": matches})
        return
    if not matches:
        click.echo(f"No finished job within {limit:g} bits of {display(record['input'])}.")
        return
    click.echo(f"{'DISTANCE':>8}  {'JOB':<20}  INPUT")
    for m in matches:
        click.echo(f"{m['distance']:>8g}  {m['id']:<20}  {display(m['input'])}")
