"""The ``stream-infer`` command line.

Every command fails with one line on stderr and a non-zero exit code: 1 for
an error, 2 for a usage error. The commands live by what they work on
(``running``, ``data``, ``dead_letters``, ``cluster``), all on the one ``app``
of ``common``; importing them here is what registers them.

Help is rendered as plain text (``rich_markup_mode=None``): typer 0.29's rich
panels print a value placeholder (``<bool>``) after every flag, ``--help``
included, as if flags took a value; the plain formatter knows they do not.
"""

from __future__ import annotations

import sys

import typer

# Imported for the commands they register, in the order --help lists them.
# isort: off
from stream_infer.cli import running, data, dead_letters, cluster  # noqa: F401

# isort: on
from stream_infer.cli.common import app
from stream_infer.errors import StreamInferError

__all__ = ["app", "main"]


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
