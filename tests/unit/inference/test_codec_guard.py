"""The hostile-input guard: events far larger than a model can take are refused cheaply."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import orjson
from onnx import TensorProto

from stream_infer.errors import ValidationError
from stream_infer.inference.codec import Decoder
from tests import models
from tests.models import event, loaded

MIB = 1024 * 1024


def _million(width: int = 1_000_000) -> bytes:
    """A million floats (4 MB): 24 bytes each once parsed, so a batch of them would weigh."""
    return b'{"id": 1, "features": [' + b",".join([b"1.5"] * width) + b"]}"


def test_a_megabyte_event_for_a_12_feature_model_is_refused_unparsed(tmp_path: Path) -> None:
    decoder = Decoder(loaded(models.linear(tmp_path / "m.onnx", n_features=12)).signature)
    huge = b'{"features": [' + b"1.5," * (MIB // 4) + b'1], "id": 2}'
    good = event([0.5] * 12, id=1)
    out = decoder.decode([good, huge, good])
    assert [i for g in out.groups for i in g.index] == [0, 2]
    ((pos, err),) = out.rejects
    assert pos == 1 and isinstance(err, ValidationError)
    assert f"event is {len(huge)} bytes" in str(err) and "refused unparsed" in str(err)


def test_a_million_numbers_under_the_size_cap_stop_at_the_length_check(tmp_path: Path) -> None:
    # A model wide enough that a million numbers (4 MB) pass the size cap: the
    # length check must still refuse the row before any array is built.
    decoder = Decoder(loaded(models.linear(tmp_path / "w.onnx", n_features=80_000)).signature)
    raw = _million()
    started = time.perf_counter()
    out = decoder.decode([raw] * 8)
    took = time.perf_counter() - started
    why = "features has 1000000 values; input x takes 80000"
    assert [str(e) for _, e in out.rejects] == [why] * 8
    assert not out.groups
    assert took < 5, f"{took:.1f}s"  # without the length check: about 50 s
    # A parsed event (~32 MB of Python floats) or two at a time, never all five: they
    # would weigh 160 MiB before any array is built.
    tracemalloc.start()
    decoder.decode([raw] * 5)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 140 * MIB, f"peak {peak / MIB:.0f} MiB"


def test_the_cap_leaves_room_for_ignored_fields(tmp_path: Path) -> None:
    decoder = Decoder(loaded(models.linear(tmp_path / "m.onnx", n_features=12)).signature)
    doc = {"id": 3, "features": [1.0] * 12, "note": "x" * 60_000}
    out = decoder.decode([orjson.dumps(doc)])
    assert not out.rejects and out.accepted == 1


def test_no_cap_for_strings_or_dynamic_axes(tmp_path: Path, dynamic_model: Path) -> None:
    text = Decoder(loaded(models.typed(tmp_path / "s.onnx", TensorProto.STRING, width=1)).signature)
    long_text = event(["y" * 200_000])
    assert text.decode([long_text]).accepted == 1
    dynamic = Decoder(loaded(dynamic_model).signature)
    assert dynamic._max_bytes is None
