"""The baseline file: readable JSON, versioned, checked against the model it is used with.

One line per feature keeps a baseline reviewable in a pull request (a
retrained model comes with a new baseline, and the diff shows what moved).
Reading is strict: every way the file can be wrong is one line that names the
file and the place, never a traceback, and a baseline built for another model
(a different signature or different ONNX bytes) is refused, because its PSIs
would compare unrelated distributions.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError

from stream_infer.errors import DriftError
from stream_infer.inference.baseline import (
    FORMAT,
    Baseline,
    Column,
    ModelIdentity,
    TensorStats,
    compare_dtype,
    file_sha256,
    signature_inputs,
    trackable,
)
from stream_infer.inference.model import Model

__all__ = ["baseline_bytes", "check_fits", "load_baseline", "save_baseline"]

_REBUILD = "rebuild it with `stream-infer drift baseline`"


# -- writing ---------------------------------------------------------------------------


def _column_doc(col: Column, dtype: str, rows: int) -> dict[str, Any]:
    # Edges in the comparison type: a float32 edge prints as 13.706, not 13.706000328063965.
    edges = col.edges.astype(compare_dtype(np.dtype(dtype)))
    return {
        "edges": edges,
        "counts": col.counts,
        "shares": np.round(col.counts / rows, 4),  # for readers; counts are what is used
        "mean": col.mean,
        "std": col.std,
    }


def _tensor_doc(stats: TensorStats, rows: int, key: str) -> dict[str, Any]:
    return {
        "dtype": stats.dtype,
        "shape": list(stats.shape),
        key: {
            label: _column_doc(col, stats.dtype, rows)
            for label, col in zip(stats.labels, stats.columns, strict=True)
        },
    }


def _render(value: Any, depth: int = 0) -> str:
    """Indented JSON whose leaves (lists, one feature's statistics) stay on one line."""
    if isinstance(value, dict) and value and "edges" not in value:
        pad = "  " * (depth + 1)
        items = [
            f"{pad}{orjson.dumps(k).decode()}: {_render(v, depth + 1)}" for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def baseline_bytes(baseline: Baseline) -> bytes:
    m, rows = baseline.model, baseline.rows
    doc = {
        "format": FORMAT,
        "model": {
            "name": m.name,
            "version": m.version,
            "sha256": m.sha256,
            "inputs": [{"name": n, "type": t, "shape": list(s)} for n, t, s in m.inputs],
            "outputs": list(m.outputs),
        },
        "rows": baseline.rows,
        "bins": baseline.bins,
        "inputs": {k: _tensor_doc(v, rows, "features") for k, v in baseline.inputs.items()},
        "outputs": {k: _tensor_doc(v, rows, "values") for k, v in baseline.outputs.items()},
        "skipped": {"inputs": baseline.skipped_inputs, "outputs": baseline.skipped_outputs},
    }
    return (_render(doc) + "\n").encode()


def save_baseline(baseline: Baseline, path: str | Path) -> None:
    """Write atomically: a worker starting meanwhile reads the old file or the new, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".baseline-", suffix=".json", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(baseline_bytes(baseline))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- reading ---------------------------------------------------------------------------


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ColumnDoc(_Doc):
    edges: list[float]
    counts: list[int] = Field(min_length=1)
    shares: list[float] = Field(default_factory=list)
    mean: float | None = None
    std: float | None = None


class _InputDoc(_Doc):
    dtype: str
    shape: list[int]
    features: dict[str, _ColumnDoc]


class _OutputDoc(_Doc):
    dtype: str
    shape: list[int]
    values: dict[str, _ColumnDoc]


class _SpecDoc(_Doc):
    name: str
    type: str
    shape: list[int | None]


class _ModelDoc(_Doc):
    name: str = ""
    version: str = ""
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    inputs: list[_SpecDoc]
    outputs: list[str]


class _SkippedDoc(_Doc):
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)


class _BaselineDoc(_Doc):
    format: int
    model: _ModelDoc
    rows: int = Field(gt=0)
    bins: int = Field(ge=2)
    inputs: dict[str, _InputDoc]
    outputs: dict[str, _OutputDoc]
    skipped: _SkippedDoc = Field(default_factory=_SkippedDoc)


def _column(doc: _ColumnDoc, rows: int, where: str) -> Column:
    edges = np.array(doc.edges, dtype=np.float64)
    counts = np.array(doc.counts, dtype=np.int64)
    if len(counts) != len(edges) + 1:
        raise ValueError(f"{where}: {len(edges)} edges need {len(edges) + 1} counts")
    if not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
        raise ValueError(f"{where}: edges must be finite and strictly increasing")
    if (counts < 0).any() or int(counts.sum()) != rows:
        raise ValueError(f"{where}: counts must be non-negative and add up to rows ({rows})")
    return Column(edges, counts, doc.mean, doc.std)


def _tensor(
    name: str, dtype: str, shape: list[int], cols: dict[str, _ColumnDoc], rows: int, where: str
) -> TensorStats:
    try:
        kind_ok = trackable(np.dtype(dtype))
    except TypeError:
        kind_ok = False
    if not kind_ok:
        raise ValueError(f"{where}.dtype: {dtype!r} is not a numeric type")
    width = math.prod(shape)
    if list(cols) != [str(i) for i in range(width)]:
        raise ValueError(f"{where}: shape {shape} needs positions '0' to '{width - 1}' in order")
    columns = tuple(_column(c, rows, f"{where}.{k}") for k, c in cols.items())
    return TensorStats(name, dtype, tuple(shape), columns)


def _parse(data: bytes) -> Baseline:
    doc = orjson.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("it must hold a JSON object")
    if doc.get("format") != FORMAT:
        raise ValueError(
            f"it has format {doc.get('format')!r}; this stream-infer reads format {FORMAT}"
        )
    parsed = _BaselineDoc.model_validate(doc)
    m = parsed.model
    identity = ModelIdentity(
        m.name,
        m.version,
        m.sha256,
        tuple((s.name, s.type, tuple(s.shape)) for s in m.inputs),
        tuple(m.outputs),
    )
    declared = {n: s for n, _, s in identity.inputs}
    rows = parsed.rows
    inputs = {}
    for name, t in parsed.inputs.items():
        if name not in declared or tuple(declared[name]) != tuple(t.shape):
            raise ValueError(f"inputs.{name}: not an input of shape {t.shape} in model.inputs")
        inputs[name] = _tensor(name, t.dtype, t.shape, t.features, rows, f"inputs.{name}")
    outputs = {}
    for name, o in parsed.outputs.items():
        if name not in identity.outputs:
            raise ValueError(f"outputs.{name}: not listed in model.outputs")
        outputs[name] = _tensor(name, o.dtype, o.shape, o.values, rows, f"outputs.{name}")
    return Baseline(
        identity, rows, parsed.bins, inputs, outputs, parsed.skipped.inputs, parsed.skipped.outputs
    )


def load_baseline(path: str | Path, model: Model | None = None) -> Baseline:
    """Read and check a baseline file; with ``model``, also check that it was built for it."""
    where = f"drift baseline {path}"
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DriftError(f"{where}: file not found") from None
    except IsADirectoryError:
        raise DriftError(f"{where} is a directory, not a baseline file") from None
    except OSError as exc:
        raise DriftError(f"{where} cannot be read: {exc.strerror}") from None
    try:
        baseline = _parse(data)
    except orjson.JSONDecodeError as exc:
        raise DriftError(f"{where} is not valid JSON: {exc}") from None
    except PydanticError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise DriftError(f"{where} is malformed: {loc}: {first['msg']}") from None
    except ValueError as exc:
        raise DriftError(f"{where} is malformed: {exc}") from None
    if model is not None:
        check_fits(baseline, model, where)
    return baseline


def _show_inputs(inputs: tuple[tuple[str, str, tuple[int | None, ...]], ...]) -> str:
    def dims(shape: tuple[int | None, ...]) -> str:
        return ", ".join("?" if d is None else str(d) for d in shape)

    return ", ".join(
        f"{n} {t.removeprefix('tensor(').rstrip(')')}[{dims(s)}]" for n, t, s in inputs
    )


def check_fits(baseline: Baseline, model: Model, where: str = "drift baseline") -> None:
    """Refuse a baseline built for another model, naming what differs."""
    have = signature_inputs(model.signature)
    if baseline.model.inputs != have:
        raise DriftError(
            f"{where} was built for a model with inputs {_show_inputs(baseline.model.inputs)}; "
            f"this model has {_show_inputs(have)}: {_REBUILD}"
        )
    if baseline.model.outputs != model.signature.outputs:
        raise DriftError(
            f"{where} was built for a model with outputs {', '.join(baseline.model.outputs)}; "
            f"this model has {', '.join(model.signature.outputs)}: {_REBUILD}"
        )
    digest = file_sha256(model.path)
    if baseline.model.sha256 != digest:
        raise DriftError(
            f"{where} was built for another model file (sha256 {baseline.model.sha256[:12]}, "
            f"{model.path} has {digest[:12]}): {_REBUILD}"
        )
