"""Topics and their records: declarations, producing, reading, the group's lag, the schema."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from stream_infer.cli.common import (
    ConfigOpt,
    app,
    cluster,
    open_input,
    settings_from,
    topics_app,
    usage,
)

__all__ = ["consume", "lag", "produce", "schema", "topics_apply"]


@topics_app.command("apply")
def topics_apply(
    config: ConfigOpt = None,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Declarations folder (default: ./topics).")
    ] = None,
) -> None:
    """Create missing topics, add partitions, set configs; never deletes. Safe to re-run.

    Only topics declared in the folder are touched. Gives up after 15 s without Kafka.
    """
    from stream_infer.tools.topics import apply_topics, default_topics_dir, load_declarations

    settings = settings_from(config)
    folder = directory or default_topics_dir()
    decls = load_declarations(folder)
    cluster(settings)
    for change in apply_topics(settings.kafka.admin_config(), decls):
        typer.echo(str(change))
    declared = {d.name for d in decls}
    wanted = {*settings.topics.inputs, settings.topics.output, settings.topics.dead_letter}
    for name in sorted(wanted - declared):
        typer.echo(
            f"{name}: warning (used by the config but not declared in {folder}: add "
            f"{folder / (name + '.yaml')} with 'name: {name}' and 'partitions: N', then "
            "run topics apply again)",
            err=True,
        )


@app.command()
def produce(
    config: ConfigOpt = None,
    topic: Annotated[
        str | None, typer.Option(help="Target topic (default: the first input).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="JSON lines to send ('-' for stdin).")
    ] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Replay the demo dataset.")] = False,
    loop: Annotated[bool, typer.Option("--loop", help="With --demo: replay forever.")] = False,
    poison_every: Annotated[
        int,
        typer.Option(
            help="With --demo: one undecodable or wrongly-shaped event every N (0: none)."
        ),
    ] = 0,
    rate: Annotated[float, typer.Option(help="Events per second (0: as fast as possible).")] = 0.0,
    count: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    key_field: Annotated[
        str | None, typer.Option(help="With --file: use this JSON field as the key.")
    ] = None,
) -> None:
    """Send events: JSON lines (file/stdin), the demo dataset, or generated rows for the model.

    Gives up after 15 s without Kafka.
    """
    from stream_infer.tools.loadgen import (
        demo_value_events,
        generated_events,
        line_events,
        produce_events,
        with_poison,
    )

    if file is not None and demo:
        usage("produce takes one source: --file or --demo, not both")
    if file is None and not demo and count is None:
        usage(
            "say what to send: --file F (JSON lines; '-' for stdin), --demo (the demo "
            "dataset), or --count N (N generated rows shaped for the model)"
        )
    if poison_every < 0 or (poison_every and not demo):
        usage("--poison-every N needs --demo and N >= 0")
    settings = settings_from(config)
    target = topic or settings.topics.inputs[0]
    if file is not None:
        stream = sys.stdin.buffer if str(file) == "-" else open_input(file)
        events = line_events(stream, key_field)
    elif demo:
        events = with_poison(demo_value_events(loop), poison_every)
    else:
        from stream_infer.inference.model import read_signature

        events = generated_events(read_signature(settings.model.path))
    cluster(settings)
    conf = {**settings.kafka.base(), **settings.kafka.producer_props()}
    acked = produce_events(conf, target, events, rate=rate, count=count)
    typer.echo(f"produced {acked} events to {target}", err=True)


@app.command()
def consume(
    config: ConfigOpt = None,
    topic: Annotated[str | None, typer.Option(help="Topic to read (default: the output).")] = None,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning/--from-end",
            help="Start at the oldest record of every partition, or only show new ones.",
        ),
    ] = True,
    count: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    idle_timeout: Annotated[
        float, typer.Option(help="Stop after this many seconds without records (0: never).")
    ] = 5.0,
) -> None:
    """Print a topic as JSON lines (value parsed, headers decoded); joins no consumer group.

    Gives up after 15 s without Kafka.
    """
    from stream_infer.tools.tail import decode_record, tail

    settings = settings_from(config)
    cluster(settings)
    target = topic or settings.topics.output
    out = sys.stdout.buffer
    for msg in tail(settings.kafka.base(), target, from_beginning, idle_timeout or None, count):
        out.write(orjson.dumps(decode_record(msg)) + b"\n")
        out.flush()


@app.command()
def lag(
    config: ConfigOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON instead of a table (one line per refresh).")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh until Ctrl-C, with rates per partition.")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes (--watch).")] = 2.0,
    times: Annotated[
        int, typer.Option(help="With --watch: stop after this many refreshes (0: never).")
    ] = 0,
) -> None:
    """Lag of the worker group on every partition of the input topics.

    Gives up after 15 s without Kafka.
    """
    from stream_infer.ops.lag import group_snapshot
    from stream_infer.ops.lag import watch as watch_lag
    from stream_infer.tools.lagview import render_text, show_live

    if interval <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--interval")
    settings = settings_from(config)
    cluster(settings)
    s = settings.kafka

    def read() -> Any:
        return group_snapshot(s.base(), s.group_id, settings.topics.inputs)

    views = watch_lag(read, s.group_id, interval, times if watch else 1)
    if as_json:
        for view in views:
            typer.echo(orjson.dumps(view.as_dict()).decode())
    elif watch and sys.stdout.isatty():
        show_live(views)
    else:
        for view in views:
            typer.echo(render_text(view))


@app.command()
def schema(config: ConfigOpt = None) -> None:
    """Print the JSON Schema (draft 2020-12) of valid input events for the configured model."""
    from stream_infer.inference.model import load_model
    from stream_infer.inference.schema import input_schema, schema_text

    settings = settings_from(config)
    model = load_model(settings.model.model_copy(update={"warmup": False, "device": "cpu"}))
    doc = input_schema(model.signature, settings.model.name, settings.model.version)
    typer.echo(schema_text(doc))
