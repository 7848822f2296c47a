"""A plain Faust agent, the contender ``faust-echo``: micro-batches of 512 in, a small JSON out.

``python -m stream_infer.tools.bench.faust_echo --bootstrap B --input T --output O --group G
--data-dir D``. The agent reads JSON values (Faust's own ``json`` serializer, one decode per
event), takes up to 512 events or 10 ms (``stream.take_events``: the batching of
``stream.take`` with each event's message at hand), and sends ``{"id", "event_time_ms"}``
per event to the output: no model, so it is a ceiling for any Faust agent that predicts.
It is what a team writes with Faust alone, with its defaults (offsets committed by Faust's
own timer); topics are made by the harness, so the app declares none.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stream_infer.tools.bench.faust_echo")
    for name in ("--bootstrap", "--input", "--output", "--group", "--data-dir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args(argv)

    import faust
    import orjson

    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        datadir=args.data_dir,
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(args.input, key_serializer="raw", value_serializer="json")
    sink = app.topic(args.output, key_serializer="raw", value_serializer="raw")

    @app.agent(source)
    async def echo(stream: Any) -> None:
        async for events in stream.take_events(args.batch, within=0.01):
            for event in events:
                value = event.value
                out = orjson.dumps(
                    {
                        "id": value.get("id") if isinstance(value, dict) else None,
                        "event_time_ms": round(event.message.timestamp * 1000),
                    }
                )
                await sink.send(key=event.key, value=out)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
