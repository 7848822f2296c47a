"""The cluster side: the local broker, and the ACLs a worker needs on a secured one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from stream_infer.cli.common import (
    DEFAULT_DATA_DIR,
    ConfigOpt,
    app,
    broker_app,
    settings_from,
    usage,
)

__all__ = ["acls", "broker_classpath", "broker_start", "broker_status_cmd", "broker_stop"]

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
        usage(f"--principal must look like User:NAME, not {principal!r}")
    grants = worker_acls(settings_from(config), guarantee)
    if apply is None:
        for line in kafka_acls_commands(grants, principal):
            typer.echo(line)
        return
    created = apply_acls({"bootstrap.servers": apply}, grants, principal)
    typer.echo(f"created {created} ACL bindings for {principal} through {apply}")
