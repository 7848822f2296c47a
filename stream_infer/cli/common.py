"""What every command shares: the app and its groups, the --config option, one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from stream_infer.config import Settings, load_settings
from stream_infer.errors import StreamInferError
from stream_infer.logging import configure_logging

__all__ = [
    "DEFAULT_DATA_DIR",
    "ConfigOpt",
    "app",
    "broker_app",
    "cluster",
    "dlq_app",
    "drift_app",
    "open_input",
    "parsed",
    "settings_from",
    "topics_app",
    "usage",
]

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


def settings_from(config: Path | None) -> Settings:
    """The validated settings, with logging set up as they say (before anything logs)."""
    settings = load_settings(config)
    configure_logging(settings.logging.level, settings.logging.json_format)
    return settings


def usage(message: str) -> NoReturn:
    """A usage error in one line (click's own take three, or a box)."""
    typer.echo(f"stream-infer: usage error: {message}", err=True)
    raise typer.Exit(2)


def cluster(settings: Settings) -> None:
    """The tools' reachability check: one line within TOOL_TIMEOUT_S when Kafka is missing."""
    from stream_infer.kafka.admin import TOOL_TIMEOUT_S, probe_cluster

    probe_cluster(settings.kafka.admin_config(), TOOL_TIMEOUT_S)


def parsed(hint: str, parse: Callable[[_In], _Out], value: _In) -> _Out:
    """``parse(value)``, its ValueError a usage error about ``hint``."""
    try:
        return parse(value)
    except ValueError as exc:
        usage(f"{hint}: {exc}")


def open_input(path: Path) -> Any:
    """A file the user named, opened for reading, or one line saying why it cannot be."""
    try:
        return path.open("rb")
    except OSError as exc:
        raise StreamInferError(f"cannot read {path}: {exc.strerror}") from None
