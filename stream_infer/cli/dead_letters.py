"""After the fact: replaying dead letters, and the drift baseline to compare traffic with."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from stream_infer.cli.common import (
    ConfigOpt,
    dlq_app,
    drift_app,
    open_input,
    parsed,
    settings_from,
    usage,
)

__all__ = ["dlq_replay", "drift_baseline"]


@dlq_app.command("replay")
def dlq_replay(
    config: ConfigOpt = None,
    stage: Annotated[
        list[str] | None,
        typer.Option(help="Only this dlq.error.stage (decode|validate|inference|produce); repeat."),
    ] = None,
    error_class: Annotated[
        list[str] | None, typer.Option(help="Only this dlq.error.class; repeat.")
    ] = None,
    from_offset: Annotated[
        list[str] | None,
        typer.Option(help="First dead-letter offset, OFFSET or PARTITION:OFFSET; repeat."),
    ] = None,
    to_offset: Annotated[
        list[str] | None,
        typer.Option(help="Last dead-letter offset (included), OFFSET or PARTITION:OFFSET."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="dlq.failed.at from (ISO-8601, UTC if no offset, or epoch ms)."),
    ] = None,
    until: Annotated[str | None, typer.Option(help="dlq.failed.at before (excluded).")] = None,
    skip_unmatched: Annotated[
        bool, typer.Option(help="Pass what the filters leave out for good, instead of holding it.")
    ] = False,
    max_replays: Annotated[
        int | None, typer.Option(help="Park events replayed this often (dlq.max_replays).")
    ] = None,
    rate: Annotated[float, typer.Option(help="Replayed events per second (0: no limit).")] = 0.0,
    group: Annotated[
        str | None, typer.Option(help="Replay progress group (dlq.replay_group).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="List what would be replayed; produce and commit nothing.")
    ] = False,
    follow: Annotated[
        bool, typer.Option(help="Keep replaying new dead letters until Ctrl-C.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Send dead letters back to their original topic, each once, even across kills."""
    from stream_infer.tools.replay import Replay, ReplayOptions
    from stream_infer.tools.replay_rules import STAGES, Filters, parse_offset_bounds, parse_time

    for name in stage or []:
        if name not in STAGES:
            usage(f"--stage: '{name}' is not one of {', '.join(STAGES)}")
    if rate < 0 or 0 < rate < 0.1:
        usage("--rate: must be 0 (no limit) or at least 0.1")
    if follow and dry_run:
        usage("--follow: a dry run cannot follow")
    if max_replays is not None and max_replays < 1:
        usage("--max-replays: must be at least 1")
    since_ms = parsed("--since", parse_time, since) if since is not None else None
    until_ms = parsed("--until", parse_time, until) if until is not None else None
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        usage("--until: must be after --since")
    filters = Filters(
        stages=frozenset(stage or ()),
        error_classes=frozenset(error_class or ()),
        from_offsets=parsed("--from-offset", parse_offset_bounds, from_offset or []),
        to_offsets=parsed("--to-offset", parse_offset_bounds, to_offset or []),
        since_ms=since_ms,
        until_ms=until_ms,
    )
    settings = settings_from(config)
    options = ReplayOptions(filters, skip_unmatched, max_replays, rate, dry_run, follow, group)
    replay = Replay(settings, options)
    signals = {"count": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            os._exit(128 + signum)
        replay.stop()  # commit what was replayed, then print the summary

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    show_bar = not quiet and sys.stderr.isatty()
    report = replay.run_with_progress_bar() if show_bar else replay.run()
    for line in report.listing() if dry_run else []:
        typer.echo(line)
    typer.echo(report.summary(dry_run))


@drift_app.command("baseline")
def drift_baseline(
    events: Annotated[
        Path, typer.Option("--events", help="Input events as JSON lines ('-' for stdin).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Baseline file to write.")],
    config: ConfigOpt = None,
    bins: Annotated[int, typer.Option(min=2, max=100, help="Quantile bins per feature.")] = 10,
) -> None:
    """Run the model on reference events and write the baseline that drift.baseline points at."""
    from stream_infer.inference.baseline_file import save_baseline
    from stream_infer.inference.model import load_model
    from stream_infer.tools.baseline import baseline_from_events

    settings = settings_from(config)
    # On CPU whatever model.device says: a reference distribution does not depend on it.
    model = load_model(settings.model.model_copy(update={"warmup": False, "device": "cpu"}))
    stream = sys.stdin.buffer if str(events) == "-" else open_input(events)
    try:
        run = baseline_from_events(
            model, stream, bins=bins, name=settings.model.name, version=settings.model.version
        )
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if run.skipped:
        typer.echo(
            f"skipped {run.skipped} events that do not fit the model (first: {run.first_reason})",
            err=True,
        )
    baseline = run.baseline
    assert baseline is not None
    save_baseline(baseline, out)
    n_in = sum(len(t.columns) for t in baseline.inputs.values())
    n_out = sum(len(t.columns) for t in baseline.outputs.values())
    untracked = [f"input {k} ({v})" for k, v in baseline.skipped_inputs.items()]
    untracked += [f"output {k} ({v})" for k, v in baseline.skipped_outputs.items()]
    typer.echo(
        f"wrote {out}: {baseline.rows} rows, {n_in} input features, {n_out} output values"
        + (f"; not tracked: {'; '.join(untracked)}" if untracked else "")
    )
