"""Output envelopes: predictions equal onnxruntime per row; dead-letter headers as SPEC.md says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from stream_infer.errors import InferenceError, ValidationError
from stream_infer.inference.codec import Decoder, Rows
from stream_infer.inference.envelope import (
    REPLAY_COUNT_HEADER,
    Encoder,
    dead_letter_headers,
    error_class,
)
from stream_infer.inference.model import Model
from tests.models import event as _ev
from tests.models import loaded as _model
from tests.records import Record


def test_predictions_match_onnxruntime_row_alone(linear: Model, linear_model: Path) -> None:
    rng = np.random.default_rng(11)
    rows = rng.normal(size=(64, 4)).astype(np.float32)
    decoded = Decoder(linear.signature).decode([_ev(r.tolist(), id=i) for i, r in enumerate(rows)])
    group = decoded.groups[0]
    outputs = linear.predict(group.feeds)
    records = [Record(100 + i, 2, timestamp_=1_764_000_000_100 + i) for i in range(64)]
    payloads = Encoder("lin", "7", linear.signature.outputs).encode(records, group, outputs)
    alone = ort.InferenceSession(str(linear_model), providers=["CPUExecutionProvider"])
    for i, payload in enumerate(payloads):
        doc = orjson.loads(payload)
        scores, best = alone.run(None, {"x": rows[i : i + 1]})
        np.testing.assert_allclose(doc["outputs"]["scores"], scores[0], rtol=1e-5, atol=1e-6)
        assert doc["outputs"]["best"] == int(best[0])
        assert doc["id"] == i
        assert doc["model"] == "lin" and doc["model_version"] == "7"
        assert doc["source"] == {"topic": "events", "partition": 2, "offset": 100 + i}
        assert doc["event_time_ms"] == 1_764_000_000_100 + i
        assert set(doc) == {"id", "model", "model_version", "outputs", "source", "event_time_ms"}


def test_misaligned_outputs_are_reported() -> None:
    enc = Encoder("m", "1", ["a", "b"])
    assert enc.misaligned([np.zeros((3, 2)), [1, 2, 3]], 3) is None
    assert "output a is not batch-aligned: 3 rows in, 1 out" in str(
        enc.misaligned([np.zeros((1, 2)), [1, 2, 3]], 3)
    )
    assert "output b" in str(enc.misaligned([np.zeros((3,)), np.float32(1.0)], 3))


def test_dead_letter_headers_keep_originals_and_replace_stale_dlq_headers() -> None:
    rec = Record(
        42,
        2,
        timestamp_=1_764_000_000_042,
        headers_=[("trace", b"abc"), ("dlq.error.stage", b"old"), ("empty", None)],
    )
    headers = dead_letter_headers(
        rec,
        "validate",
        "ValidationError",
        "bad\nthing " + "x" * 5000,
        group="g1",
        model_version="3",
        worker="w-1",
        now_ms=lambda: 123,
    )
    names = [k for k, _ in headers]
    assert names[:2] == ["trace", "empty"]
    assert names.count("dlq.error.stage") == 1
    got = dict(headers)
    assert got["trace"] == b"abc" and got["empty"] is None
    expected = {
        "dlq.original.topic": b"events",
        "dlq.original.partition": b"2",
        "dlq.original.offset": b"42",
        "dlq.original.timestamp": b"1764000000042",
        "dlq.error.stage": b"validate",
        "dlq.error.class": b"ValidationError",
        "dlq.consumer.group": b"g1",
        "dlq.model.version": b"3",
        "dlq.worker": b"w-1",
        "dlq.failed.at": b"123",
    }
    for key, value in expected.items():
        assert got[key] == value, key
    message = got["dlq.error.message"].decode()
    assert message.startswith("bad thing xxx") and "\n" not in message
    assert len(message) == 1024 and message.endswith("...")


def test_a_replayed_event_that_fails_again_keeps_its_replay_count() -> None:
    # dlq replay parks an event after dlq.max_replays; the count has to survive
    # the worker's dropping of the previous generation's dlq.* headers.
    rec = Record(
        5,
        headers_=[
            ("trace", b"t"),
            ("dlq.error.stage", b"inference"),
            (REPLAY_COUNT_HEADER, b"2"),
        ],
    )
    headers = dead_letter_headers(
        rec, "validate", "ValidationError", "bad", group="g", model_version="1", worker="w"
    )
    names = [k for k, _ in headers]
    assert names.count(REPLAY_COUNT_HEADER) == 1
    assert dict(headers)[REPLAY_COUNT_HEADER] == b"2"
    assert dict(headers)["dlq.error.stage"] == b"validate"
    assert names.count("dlq.error.stage") == 1


def test_error_class_names_the_root_cause() -> None:
    wrapped = InferenceError("wrapped")
    wrapped.__cause__ = KeyError("inner")
    assert error_class(wrapped) == "KeyError"
    assert error_class(ValidationError("x")) == "ValidationError"


def test_sequence_outputs_are_written_per_row(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(to_onnx(clf, x[:1].astype(np.float32)).SerializeToString())  # ZipMap on
    model = _model(path)
    decoded = Decoder(model.signature).decode([_ev(row.tolist()) for row in x[:3]])
    outputs = model.predict(decoded.groups[0].feeds)
    payloads = Encoder("iris", "1", model.signature.outputs).encode(
        [Record(i) for i in range(3)], decoded.groups[0], outputs
    )
    for i, payload in enumerate(payloads):
        doc = orjson.loads(payload)["outputs"]
        assert doc["output_label"] == int(outputs[0][i])
        proba = doc["output_probability"]
        assert set(proba) == {"0", "1", "2"}  # map keys become JSON strings
        assert proba["0"] == pytest.approx(outputs[1][i][0])


def _generic(enc: Encoder, records, rows, outputs) -> list[dict]:
    """The per-row form: a dict and a dumps per row (what the fast form must equal)."""
    return [orjson.loads(p) for p in enc._encode_rows(records, rows, outputs)]


def _rows(n: int, ids: list) -> Rows:
    return Rows(list(range(n)), ids, {})


@pytest.mark.parametrize(
    "outputs",
    [
        [np.arange(5, dtype=np.int64), np.linspace(0, 1, 10, dtype=np.float32).reshape(5, 2)],
        [np.array([True, False, True, True, False])],
        [np.arange(5 * 2 * 3, dtype=np.float64).reshape(5, 2, 3) / 7],
        [np.array([1.5, np.nan, np.inf, -np.inf, -0.0], dtype=np.float32)],
        [np.arange(10, dtype=np.uint8).reshape(5, 2)[:, ::-1]],  # not contiguous
        [np.array([2**63 - 1, -(2**63), 0, 1, -1], dtype=np.int64)],
    ],
)
def test_the_fast_form_writes_what_the_per_row_form_writes(outputs: list) -> None:
    names = [f"o{k}" for k in range(len(outputs))]
    enc = Encoder("m", "1", names)
    records = [Record(10 + i, i % 3, topic_=f"t{i % 2}", timestamp_=1000 + i) for i in range(5)]
    ids = [0, "a,b", None, 'q"uote', 2**62]
    fast = [orjson.loads(p) for p in enc.encode(records, _rows(5, ids), outputs)]
    slow = _generic(enc, records, _rows(5, ids), outputs)
    for f, s in zip(fast, slow, strict=True):
        assert {k: v for k, v in f.items() if k != "outputs"} == {
            k: v for k, v in s.items() if k != "outputs"
        }
        for name in names:
            np.testing.assert_allclose(
                np.array(f["outputs"][name], dtype=float),
                np.array(s["outputs"][name], dtype=float),
                rtol=1e-6,
            )


def test_float32_outputs_read_back_as_the_same_float32() -> None:
    values = np.random.default_rng(3).normal(size=(64, 3)).astype(np.float32)
    enc = Encoder("m", "1", ["v"])
    payloads = enc.encode([Record(i) for i in range(64)], _rows(64, list(range(64))), [values])
    back = np.array([orjson.loads(p)["outputs"]["v"] for p in payloads], dtype=np.float32)
    assert np.array_equal(back, values)  # exact, not within a tolerance


def test_outputs_that_are_not_numeric_tensors_take_the_per_row_form() -> None:
    enc = Encoder("m", "1", ["label", "probs"])
    labels = np.array(["cat", "dog"], dtype=object)
    probs = [{"cat": 0.9, "dog": 0.1}, {"cat": 0.2, "dog": 0.8}]  # a ZipMap sequence
    payloads = enc.encode([Record(0), Record(1)], _rows(2, [1, 2]), [labels, probs])
    docs = [orjson.loads(p) for p in payloads]
    assert docs[1]["outputs"] == {"label": "dog", "probs": {"cat": 0.2, "dog": 0.8}}
