"""The ``stream-infer`` command line.

Every command fails with one line on stderr and a non-zero exit code: 1 for
an error, 2 for a usage error.

Help is rendered as plain text (``rich_markup_mode=None``): typer 0.29's rich
panels print a value placeholder (``<bool>``) after every flag, ``--help``
included, as if flags took a value; the plain formatter knows they do not.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import orjson
import typer

from stream_infer.config import Settings, load_settings
from stream_infer.errors import StreamInferError
from stream_infer.logging import configure_logging

__all__ = ["app", "main"]

app = typer.Typer(
    name="stream-infer",
    help="Batched ONNX inference over Kafka streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
topics_app = typer.Typer(
    help="Topic declarations (topics/*.yaml).", no_args_is_help=True, rich_markup_mode=None
)
broker_app = typer.Typer(
    help="The local single-node Kafka broker (no Docker).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
dlq_app = typer.Typer(help="Dead letters.", no_args_is_help=True, rich_markup_mode=None)
drift_app = typer.Typer(
    help="Drift monitoring: reference distributions of inputs and outputs.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(topics_app, name="topics")
app.add_typer(broker_app, name="broker")
app.add_typer(dlq_app, name="dlq")
app.add_typer(drift_app, name="drift")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file (default: $STREAM_INFER_CONFIG, else built-in defaults); "
        "STREAM_INFER_* variables override it.",
    ),
]
DEFAULT_DATA_DIR = Path(".stream-infer/broker")
_In = TypeVar("_In")
_Out = TypeVar("_Out")


def _settings(config: Path | None) -> Settings:
    settings = load_settings(config)
    configure_logging(settings.logging.level, settings.logging.json_format)
    return settings


def _tune_gc() -> None:
    """Collect the youngest generation every 50,000 allocations instead of 700.

    Decoding makes a dict, a list and a float per number of every event, all
    freed by reference counting; the cyclic collector only rescans them.
    Measured on 512-event batches of 12 features with a worker-sized heap:
    decoding took 0.85 µs an event instead of 1.0. The worker process is
    ours, so the setting is made here, never in the library classes.
    """
    import gc

    gc.freeze()  # what start-up loaded (modules, the model) is never collected again
    gc.set_threshold(50_000, 20, 100)


def _usage(message: str) -> NoReturn:
    """A usage error in one line (click's own take three, or a box)."""
    typer.echo(f"stream-infer: usage error: {message}", err=True)
    raise typer.Exit(2)


def _cluster(settings: Settings) -> None:
    """The tools' reachability check: one line within TOOL_TIMEOUT_S when Kafka is missing."""
    from stream_infer.kafka.admin import TOOL_TIMEOUT_S, probe_cluster

    probe_cluster(settings.kafka.admin_config(), TOOL_TIMEOUT_S)


# -- run --------------------------------------------------------------------------


@app.command()
def run(
    config: ConfigOpt = None,
    runtime: Annotated[
        Literal["native", "faust"],
        typer.Option(
            help="native: the confluent-kafka loop; faust: a Faust agent (faust-streaming)."
        ),
    ] = "native",
) -> None:
    """Run one worker: consume, infer, produce predictions and dead letters, commit.

    Gives up with one line when Kafka does not answer within 60 s.
    """
    settings = _settings(config)
    worker: Any
    if runtime == "faust":
        from stream_infer.runtimes.faust import FaustWorker

        worker = FaustWorker(settings, exit_on_overrun=True)
    else:
        from stream_infer.runtimes.worker import Worker

        worker = Worker(settings)
    _tune_gc()
    signals = {"count": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            os._exit(128 + signum)  # second signal: the operator means it
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()


# -- topics -------------------------------------------------------------------------


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

    settings = _settings(config)
    folder = directory or default_topics_dir()
    decls = load_declarations(folder)
    _cluster(settings)
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


# -- produce / consume / lag ----------------------------------------------------------


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
        _usage("produce takes one source: --file or --demo, not both")
    if file is None and not demo and count is None:
        _usage(
            "say what to send: --file F (JSON lines; '-' for stdin), --demo (the demo "
            "dataset), or --count N (N generated rows shaped for the model)"
        )
    if poison_every < 0 or (poison_every and not demo):
        _usage("--poison-every N needs --demo and N >= 0")
    settings = _settings(config)
    target = topic or settings.topics.inputs[0]
    if file is not None:
        stream = sys.stdin.buffer if str(file) == "-" else _open(file)
        events = line_events(stream, key_field)
    elif demo:
        events = with_poison(demo_value_events(loop), poison_every)
    else:
        from stream_infer.inference.model import read_signature

        events = generated_events(read_signature(settings.model.path))
    _cluster(settings)
    conf = {**settings.kafka.base(), **settings.kafka.producer_props()}
    acked = produce_events(conf, target, events, rate=rate, count=count)
    typer.echo(f"produced {acked} events to {target}", err=True)


def _open(path: Path) -> Any:
    try:
        return path.open("rb")
    except OSError as exc:
        raise StreamInferError(f"cannot read {path}: {exc.strerror}") from None


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

    settings = _settings(config)
    _cluster(settings)
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
    settings = _settings(config)
    _cluster(settings)
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


# -- dlq ---------------------------------------------------------------------------------


def _parsed(hint: str, parse: Callable[[_In], _Out], value: _In) -> _Out:
    try:
        return parse(value)
    except ValueError as exc:
        _usage(f"{hint}: {exc}")


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
            _usage(f"--stage: '{name}' is not one of {', '.join(STAGES)}")
    if rate < 0 or 0 < rate < 0.1:
        _usage("--rate: must be 0 (no limit) or at least 0.1")
    if follow and dry_run:
        _usage("--follow: a dry run cannot follow")
    if max_replays is not None and max_replays < 1:
        _usage("--max-replays: must be at least 1")
    since_ms = _parsed("--since", parse_time, since) if since is not None else None
    until_ms = _parsed("--until", parse_time, until) if until is not None else None
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        _usage("--until: must be after --since")
    filters = Filters(
        stages=frozenset(stage or ()),
        error_classes=frozenset(error_class or ()),
        from_offsets=_parsed("--from-offset", parse_offset_bounds, from_offset or []),
        to_offsets=_parsed("--to-offset", parse_offset_bounds, to_offset or []),
        since_ms=since_ms,
        until_ms=until_ms,
    )
    settings = _settings(config)
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


# -- bench ------------------------------------------------------------------


@app.command()
def bench(
    model: Annotated[
        str, typer.Option(help="ONNX file, or a built-in: tabular (12 features), heavy.")
    ] = "tabular",
    quick: Annotated[bool, typer.Option(help="Under a minute: fewer events, one round.")] = False,
    events: Annotated[int | None, typer.Option(min=1000, help="Pre-filled events.")] = None,
    repeats: Annotated[int | None, typer.Option(min=1, help="Rounds of catch-up runs.")] = None,
    contenders: Annotated[str | None, typer.Option(help="Comma-separated (default: all).")] = None,
    out: Annotated[Path | None, typer.Option(help="Results folder.")] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Use this broker (HOST:PORT) instead of starting one.")
    ] = None,
    profile: Annotated[bool, typer.Option(help="Also profile the worker with py-spy.")] = False,
) -> None:
    """Benchmark the worker against hand-written loops; see README, Benchmark."""
    from stream_infer.tools.bench import BenchOptions, parse_contenders, run_bench

    names = _parsed("--contenders", parse_contenders, contenders)
    command = " ".join(["stream-infer", *sys.argv[1:]])
    options = BenchOptions(model, quick, events, repeats, names, out, bootstrap, profile, command)
    raise typer.Exit(run_bench(options))


# -- drift and the data contract -------------------------------------------------------


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

    settings = _settings(config)
    # On CPU whatever model.device says: a reference distribution does not depend on it.
    model = load_model(settings.model.model_copy(update={"warmup": False, "device": "cpu"}))
    stream = sys.stdin.buffer if str(events) == "-" else _open(events)
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


@app.command()
def schema(config: ConfigOpt = None) -> None:
    """Print the JSON Schema (draft 2020-12) of valid input events for the configured model."""
    from stream_infer.inference.model import load_model
    from stream_infer.inference.schema import input_schema, schema_text

    settings = _settings(config)
    model = load_model(settings.model.model_copy(update={"warmup": False, "device": "cpu"}))
    doc = input_schema(model.signature, settings.model.name, settings.model.version)
    typer.echo(schema_text(doc))


# -- broker ------------------------------------------------------------------------------

PortOpt = Annotated[int, typer.Option(help="Port on 127.0.0.1.")]
DataDirOpt = Annotated[
    Path, typer.Option(help="Broker data folder (pid file, logs, log segments).")
]


@broker_app.command("start")
def broker_start(
    port: PortOpt = 9092,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Also listen with SASL_SSL (SCRAM) and mTLS, ACLs enforced; PORT stays the "
            "admin's PLAINTEXT door on 127.0.0.1. Prints the client settings.",
        ),
    ] = False,
    secure_port: Annotated[int | None, typer.Option(help="SASL_SSL port (default PORT+1).")] = None,
    mtls_port: Annotated[int | None, typer.Option(help="mTLS port (default PORT+2).")] = None,
) -> None:
    """Start the broker; returns once 127.0.0.1:PORT accepts Kafka requests."""
    if secure:
        from stream_infer.tools.securebroker import describe, start_secure_broker

        broker = start_secure_broker(port, secure_port or port + 1, mtls_port or port + 2, data_dir)
        typer.echo(describe(broker))
        return
    from stream_infer.tools.devbroker import start_broker

    status = start_broker(port, data_dir)
    typer.echo(
        f"broker running: pid {status.pid}, bootstrap {status.bootstrap}, data {status.data_dir}"
    )


OptionalPortOpt = Annotated[
    int | None,
    typer.Option(help="The port the broker of DATA_DIR should run on; checked, not searched."),
]


@broker_app.command("stop")
def broker_stop(port: OptionalPortOpt = None, data_dir: DataDirOpt = DEFAULT_DATA_DIR) -> None:
    """Stop the broker of DATA_DIR (SIGTERM, then SIGKILL after 30 s)."""
    from stream_infer.tools.devbroker import expect_port, stop_broker

    expect_port(data_dir, port)
    typer.echo("broker stopped" if stop_broker(data_dir) else "no broker was running")


@broker_app.command("status")
def broker_status_cmd(
    port: OptionalPortOpt = None, data_dir: DataDirOpt = DEFAULT_DATA_DIR
) -> None:
    """Say whether the broker of DATA_DIR runs and answers; exit 1 when it does not."""
    from stream_infer.tools.devbroker import broker_status, expect_port

    expect_port(data_dir, port)
    st = broker_status(data_dir)
    if not st.running:
        typer.echo(f"not running (data {st.data_dir})")
        raise typer.Exit(1)
    typer.echo(
        f"running: pid {st.pid}, bootstrap {st.bootstrap}, "
        + ("answering" if st.reachable else "NOT answering")
    )
    if not st.reachable:
        raise typer.Exit(1)


@broker_app.command("classpath")
def broker_classpath() -> None:
    """Print the Kafka classpath, for Kafka's own console tools (see the README)."""
    from stream_infer.tools.devbroker import classpath

    typer.echo(classpath())


# -- acls ---------------------------------------------------------------------------------


@app.command()
def acls(
    principal: Annotated[str, typer.Option(help="Who the worker is, e.g. User:stream-infer.")],
    config: ConfigOpt = None,
    guarantee: Annotated[
        Literal["at_least_once", "exactly_once"] | None,
        typer.Option(help="Grant for this guarantee (default: the configured one)."),
    ] = None,
    apply: Annotated[
        str | None,
        typer.Option(
            help="Create them through this admin listener (PLAINTEXT, e.g. the local "
            "broker's 127.0.0.1:9092) instead of printing kafka-acls.sh commands."
        ),
    ] = None,
) -> None:
    """The ACLs a worker of this config needs: kafka-acls.sh commands, or applied with --apply."""
    from stream_infer.tools.acls import apply_acls, kafka_acls_commands, worker_acls

    if not principal.startswith("User:") or len(principal) == len("User:"):
        _usage(f"--principal must look like User:NAME, not {principal!r}")
    grants = worker_acls(_settings(config), guarantee)
    if apply is None:
        for line in kafka_acls_commands(grants, principal):
            typer.echo(line)
        return
    created = apply_acls({"bootstrap.servers": apply}, grants, principal)
    typer.echo(f"created {created} ACL bindings for {principal} through {apply}")


# -- dev ---------------------------------------------------------------------------------


@app.command()
def dev(
    config: ConfigOpt = None,
    rate: Annotated[float, typer.Option(help="Demo events per second.")] = 200.0,
    duration: Annotated[
        float, typer.Option(help="Stop after this many seconds (0: Ctrl-C).")
    ] = 0.0,
    poison_every: Annotated[
        int,
        typer.Option(help="Send one undecodable event every N (0: none), to show dead letters."),
    ] = 250,
    keep_broker: Annotated[
        bool, typer.Option("--keep-broker", help="Leave the broker running on exit.")
    ] = False,
) -> None:
    """Everything locally: broker, topics, demo model, worker and demo producer.

    Ctrl-C, SIGTERM or SIGHUP stop it all (the broker too, unless --keep-broker)
    and print the totals; exit code 0. A second signal exits at once.
    """
    from stream_infer.tools.devloop import run_dev

    settings = _settings(config)
    run_dev(
        settings,
        rate=rate,
        duration=duration,
        poison_every=poison_every,
        keep_broker=keep_broker,
        config=config,
    )


def main() -> None:
    """Entry point: one clear line for every expected failure."""
    try:
        app()
    except StreamInferError as exc:
        typer.echo(f"stream-infer: error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        from confluent_kafka import KafkaException

        if isinstance(exc, KafkaException):
            from stream_infer.errors import kafka_error_text

            typer.echo(f"stream-infer: kafka error: {kafka_error_text(exc.args[0])}", err=True)
            sys.exit(1)
        raise
