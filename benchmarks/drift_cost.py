"""What drift monitoring costs the worker: ``DriftMonitor.observe`` per batch beside inference.

Times, on the same 512-row batch of demo events (30 float32 features, outputs ``label`` and
``probabilities``):

- ``observe``: binning the 30 inputs and 3 output values into the sliding window;
- ``predict``: one onnxruntime run of the demo model (what the worker does per batch anyway);
- ``snapshot``: computing every PSI and output moment (once per refresh, not per batch).

Each figure is the best of several repeats (the machine is shared). The share of a worker is
the observe time per row times a rate of events per second, as a fraction of one core.

Run: ``.venv/bin/python benchmarks/drift_cost.py [--rows 512] [--rate 50000]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stream_infer.config import ModelSettings
from stream_infer.inference.baseline_file import load_baseline
from stream_infer.inference.drift import DriftMonitor
from stream_infer.inference.model import load_model
from stream_infer.tools.demo import demo_dataset

ROOT = Path(__file__).resolve().parents[1]


def best_of(fn: Callable[[int], None], loops: int, repeats: int = 7) -> float:
    """Seconds per call, best of ``repeats`` runs of ``loops`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(loops):
            fn(i)
        best = min(best, (time.perf_counter() - start) / loops)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512, help="rows per batch")
    parser.add_argument("--rate", type=float, default=50_000, help="events/s for the share")
    parser.add_argument("--loops", type=int, default=300)
    args = parser.parse_args()

    settings = ModelSettings.model_validate(
        {"path": str(ROOT / "models/demo.onnx"), "device": "cpu", "intra_op_threads": 1}
    )
    model = load_model(settings, warmup_rows=args.rows)
    baseline = load_baseline(ROOT / "models/demo.baseline.json", model)
    x, _, _ = demo_dataset()
    rows = np.resize(x, (args.rows, x.shape[1])).astype(np.float32)
    feeds = {model.signature.inputs[0].name: rows}
    outputs = model.predict(feeds)
    monitor = DriftMonitor(baseline, window_s=60)

    # 0.1 s apart: the window's slots rotate and get reset during the run, as in service.
    observe = best_of(lambda i: monitor.observe(feeds, outputs, now=i * 0.1), args.loops)
    predict = best_of(lambda i: model.predict(feeds), args.loops)
    snapshot = best_of(lambda i: monitor.snapshot(now=args.loops * 0.1), 50)

    per_row = observe / args.rows
    share = per_row * args.rate
    print(f"batch: {args.rows} rows x {rows.shape[1]} features (demo model, float32)")
    print(f"observe : {observe * 1e6:8.1f} us/batch  {per_row * 1e9:6.0f} ns/row")
    print(
        f"predict : {predict * 1e6:8.1f} us/batch  {predict / args.rows * 1e9:6.0f} ns/row "
        "(onnxruntime, 1 thread)"
    )
    print(f"snapshot: {snapshot * 1e6:8.1f} us (33 PSIs and output moments, once per refresh)")
    print(f"observe / predict: {observe / predict:.2f}")
    print(
        f"at {args.rate:,.0f} events/s: {share * 100:.2f}% of one core "
        f"({share / 2 * 100:.2f}% of a 2-core worker)"
    )
    print(f"{platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
