"""The plain Faust agents, contenders ``faust-echo`` and ``faust-batched``.

``python -m stream_infer.tools.bench.faust_agent --bootstrap B --input T --output O --group G
--data-dir D [--model M]``. The agent reads JSON values (Faust's own ``json`` serializer, one
decode per event) and takes up to 512 events or 10 ms (``stream.take_events``: the batching
of ``stream.take`` with each event's message at hand). Without ``--model`` it sends
``{"id", "event_time_ms"}`` per event (no model: a ceiling for any Faust agent that
predicts); with it, one onnxruntime call per batch and one prediction per event, built as
the hand-written ``hand-batched`` loop builds them. It is what a team writes with Faust
alone, with its defaults (offsets committed by Faust's own timer); topics are made by the
harness, so the app declares none.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stream_infer.tools.bench.loops import feeds, open_session, row_of

__all__ = ["main"]


def _prediction(names: list[str], outs: list[Any], j: int, doc: Any, message: Any) -> bytes:
    return json.dumps(
        {
            "id": doc.get("id"),
            "model": "bench",
            "model_version": "1",
            "outputs": {n: row_of(o, j) for n, o in zip(names, outs, strict=True)},
            "source": {
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
            },
            "event_time_ms": round(message.timestamp * 1000),
        }
    ).encode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stream_infer.tools.bench.faust_agent")
    for name in ("--bootstrap", "--input", "--output", "--group", "--data-dir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--model", default=None)
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

    if args.model is None:

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

    else:
        session = open_session(args.model)
        names = [o.name for o in session.get_outputs()]

        @app.agent(source)
        async def predict(stream: Any) -> None:
            async for events in stream.take_events(args.batch, within=0.01):
                docs = [event.value for event in events]
                outs = session.run(None, feeds(session, docs))
                for j, event in enumerate(events):
                    out = _prediction(names, outs, j, docs[j], event.message)
                    await sink.send(key=event.key, value=out)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
