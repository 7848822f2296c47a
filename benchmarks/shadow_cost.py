"""What a shadow model costs the primary: the primary's time per batch, shadow inline or threaded.

Three ways of running the inference thread's work on batches of demo rows (30 float32
features; the demo model as primary, a second session of it as shadow):

- ``alone``: the primary's inference and encoding, no shadow;
- ``inline``: the same, then the shadow's inference, encoding and agreement on this thread;
- ``thread``: the primary alone on this thread, the shadow's work on its own thread fed by
  a bounded queue (what the worker does; batches are dropped when the queue is full).

Producing is left out (it is the same in all three). The figure that matters is the
primary's time per batch (what its latency grows by) and how many batches the shadow keeps
up with. Each figure is the median of several repeats (the machine is shared).

Run: ``.venv/bin/python benchmarks/shadow_cost.py [--rows 512] [--batches 400]``.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import queue
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from records import Record  # benchmarks/records.py, beside this script

from stream_infer.config import ModelSettings
from stream_infer.inference.agreement import AgreementMonitor, compare_outputs
from stream_infer.inference.batch import infer_rows
from stream_infer.inference.codec import Rows
from stream_infer.inference.envelope import Origins
from stream_infer.inference.model import load_model
from stream_infer.inference.variants import Variant
from stream_infer.tools.demo import demo_dataset

ROOT = Path(__file__).resolve().parents[1]


def _work(variant: Variant, rows: Rows, records: list[Any], origins: Origins) -> list[Any]:
    model, encoder = variant.model, variant.encoder
    done, _ = infer_rows(rows, lambda f, n: model.predict(f), encoder.misaligned)
    outputs = done[0][1]
    encoder.encode(records, rows, outputs, origins)
    return outputs


def run(
    mode: str, primary: Variant, shadow: Variant, rows: Rows, batches: int
) -> tuple[float, int]:
    """Median seconds per primary batch, and batches the shadow ran."""
    records = [Record(i) for i in range(len(rows.index))]
    origins = Origins.of(records)
    agreement = AgreementMonitor(300)
    names = primary.model.signature.outputs
    ran = 0
    q: queue.Queue[list[Any] | None] = queue.Queue(maxsize=4)

    def shadow_work(theirs: list[Any]) -> None:
        nonlocal ran
        mine = _work(shadow, rows, records, origins)
        agreement.add(compare_outputs(names, theirs, names, mine))
        ran += 1

    def loop() -> None:
        while (item := q.get()) is not None:
            shadow_work(item)

    thread = threading.Thread(target=loop, daemon=True)
    if mode == "thread":
        thread.start()
    times = []
    for _ in range(batches):
        started = time.perf_counter()
        outputs = _work(primary, rows, records, origins)
        if mode == "inline":
            shadow_work(outputs)
        elif mode == "thread":
            with contextlib.suppress(queue.Full):  # behind: the batch is dropped for it
                q.put_nowait(outputs)
        times.append(time.perf_counter() - started)
    if mode == "thread":
        q.put(None)
        thread.join()
    return statistics.median(times), ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512, help="rows per batch")
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    settings = ModelSettings.model_validate(
        {"path": str(ROOT / "models/demo.onnx"), "device": "cpu", "intra_op_threads": 1}
    )
    primary = Variant.of("primary", load_model(settings, args.rows), "demo", "1")
    shadow = Variant.of("shadow", load_model(settings, args.rows), "demo", "2")
    x, _, _ = demo_dataset()
    feeds = {"X": np.resize(x, (args.rows, x.shape[1])).astype(np.float32)}
    rows = Rows(list(range(args.rows)), list(range(args.rows)), feeds)
    print(f"{args.rows} rows a batch, {args.batches} batches, median of {args.repeats} repeats")
    for mode in ("alone", "inline", "thread"):
        results = [run(mode, primary, shadow, rows, args.batches) for _ in range(args.repeats)]
        per_batch = statistics.median(r[0] for r in results)
        ran = statistics.median(r[1] for r in results)
        print(f"{mode:>6}: primary {per_batch * 1e6:8.1f} us/batch, shadow ran {ran:.0f} batches")
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
