"""The inference stage alone: decode -> batch -> infer -> encode, no broker (CPU or GPU).

What a GPU changes is the model's share of the per-event cost; the pipeline's
own per-event cost (JSON in, JSON out) stays. This measures both on whatever
device onnxruntime offers, with the worker's own code: ``Decoder``,
``infer_batch`` (bisection, encoding) and the model as ``load_model`` opens it
(on a GPU: buckets, IO binding, pinned staging, optionally CUDA graphs).

    python benchmarks/inference_stage.py --model M.onnx --device cuda --batch 512 --events 200000

Prints events/s for the whole stage and for each part, per batch size.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import orjson
from records import Record  # benchmarks/records.py, beside this script

from stream_infer.config import ModelSettings
from stream_infer.inference.batch import infer_batch
from stream_infer.inference.codec import Decoder
from stream_infer.inference.envelope import Encoder, Origins
from stream_infer.inference.model import load_model


def _events(model_path: Path, n: int) -> list[bytes]:
    from stream_infer.inference.model import read_signature

    signature = read_signature(model_path)
    spec = signature.inputs[0]
    width = int(np.prod([d or 4 for d in spec.shape])) if spec.shape else 1
    rng = np.random.default_rng(0)
    rows = np.round(rng.normal(size=(1000, width)), 4).tolist()
    return [orjson.dumps({"id": i, "features": rows[i % 1000]}) for i in range(n)]


def run(model_path: Path, device: str, batch: int, n: int, graphs: bool) -> dict[str, float]:
    settings = ModelSettings(path=str(model_path), device=device, cuda_graphs=graphs)
    model = load_model(settings, warmup_rows=batch)
    decoder = Decoder(model.signature)
    encoder = Encoder("bench", "1", model.signature.outputs)
    values = _events(model_path, n)
    spent = {"decode": 0.0, "infer+encode": 0.0}
    clock = time.perf_counter
    started = clock()
    for start in range(0, n, batch):
        chunk = values[start : start + batch]
        records = [Record(start + i, v) for i, v in enumerate(chunk)]
        t0 = clock()
        decoded = decoder.decode(chunk)
        t1 = clock()
        infer_batch(model, encoder, records, decoded, origins=Origins.of(records))
        spent["decode"] += t1 - t0
        spent["infer+encode"] += clock() - t1
    total = clock() - started
    out = {"events/s": n / total, "provider": model.provider}
    out.update({f"{k} µs/event": 1e6 * v / n for k, v in spent.items()})
    return out  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--cuda-graphs", action="store_true")
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, python {platform.python_version()}")
    for size in args.batch:
        result = run(args.model, args.device, size, args.events, args.cuda_graphs)
        shown = ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
        )
        print(f"batch {size}: {shown}")


if __name__ == "__main__":
    main()
