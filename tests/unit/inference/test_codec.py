"""Decoding, validation, encoding and the dead-letter envelope, against real model signatures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from stream_infer.errors import DecodeError, ValidationError
from stream_infer.inference.codec import Decoder, Rows
from stream_infer.inference.model import Model
from tests.models import event as _ev
from tests.models import loaded as _model

GOOD = [0.5, -1.0, 2, 3.25]


# Every way one event can be wrong, with the words its dead letter must carry.
POISON = [
    pytest.param(None, DecodeError, "tombstone", id="tombstone"),
    pytest.param(b"", DecodeError, "not valid JSON", id="empty-bytes"),
    pytest.param(b"\xff\xfe\x00", DecodeError, "not valid JSON", id="not-utf8"),
    pytest.param(b'{"features": [1, 2', DecodeError, "not valid JSON", id="truncated-json"),
    pytest.param(b'{"features": [1,2,3,4]} trailing', DecodeError, "not valid JSON", id="trailing"),
    pytest.param(b"NaN", DecodeError, "not valid JSON", id="nan-literal"),
    pytest.param(b'{"features": [1e400, 0, 0, 0]}', DecodeError, "not valid JSON", id="json-inf"),
    pytest.param(b"[1, 2, 3, 4]", ValidationError, "JSON object, not array", id="top-level-array"),
    pytest.param(b'"text"', ValidationError, "JSON object, not string", id="top-level-string"),
    pytest.param(b"null", ValidationError, "JSON object, not null", id="top-level-null"),
    pytest.param(b'{"id": 1}', ValidationError, "'features' is missing", id="no-features"),
    pytest.param(_ev(None), ValidationError, "'features' is null", id="null-features"),
    pytest.param(_ev("1,2,3,4"), ValidationError, "must be an array", id="features-string"),
    pytest.param(_ev(3.0), ValidationError, "must be an array", id="features-scalar"),
    pytest.param(_ev([1, 2, 3]), ValidationError, "has 3 values; input x takes 4", id="too-short"),
    pytest.param(_ev([1, 2, 3, 4, 5]), ValidationError, "has 5 values", id="too-long"),
    pytest.param(_ev([]), ValidationError, "has 0 values", id="empty-array"),
    pytest.param(_ev([1, None, 3, 4]), ValidationError, "features[1] is null", id="null-value"),
    pytest.param(
        _ev([1, "2", 3, 4]), ValidationError, "features[1] is string", id="numeric-string"
    ),
    pytest.param(_ev([1, True, 3, 4]), ValidationError, "features[1] is boolean", id="boolean"),
    pytest.param(_ev([1, [2], 3, 4]), ValidationError, "(features[1] is an array)", id="too-deep"),
    pytest.param(_ev([[1, 2], [3]]), ValidationError, "nested too deeply", id="ragged"),
    pytest.param(
        _ev([[1, 2, 3, 4]]),
        ValidationError,
        "nested too deeply for input x float[4]",
        id="extra-nesting",
    ),
    pytest.param(_ev([1, {"v": 2}, 3, 4]), ValidationError, "features[1] is object", id="object"),
    pytest.param(
        _ev([1e39, 0, 0, 0]), ValidationError, "out of range for float32", id="f32-overflow"
    ),
    pytest.param(_ev({"y": GOOD}), ValidationError, "missing input 'x'", id="wrong-input-name"),
    pytest.param(_ev({"x": GOOD, "z": 1}), ValidationError, "unknown input 'z'", id="extra-input"),
    pytest.param(
        _ev(GOOD, id=1.5), ValidationError, "id must be a string or an integer", id="id-float"
    ),
    pytest.param(_ev(GOOD, id=True), ValidationError, "not true", id="id-bool"),
    pytest.param(_ev(GOOD, id=[1]), ValidationError, "id must be", id="id-array"),
]


@pytest.mark.parametrize(("raw", "kind", "words"), POISON)
def test_each_poison_is_rejected_alone_with_a_reason(linear: Model, raw, kind, words) -> None:
    good = _ev(GOOD, id="before")
    out = Decoder(linear.signature).decode([good, raw, _ev(GOOD, id="after")])
    assert [i for i, _ in out.rejects] == [1]
    exc = out.rejects[0][1]
    assert type(exc) is kind
    assert words in str(exc)
    assert [g.index for g in out.groups] == [[0, 2]]
    assert out.groups[0].ids == ["before", "after"]
    np.testing.assert_array_equal(
        out.groups[0].feeds["x"], np.array([GOOD, GOOD], dtype=np.float32)
    )


def test_fast_path_matches_row_by_row(linear: Model) -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(200, 4)).tolist()
    events = [_ev(r, id=i) for i, r in enumerate(rows)]
    clean = Decoder(linear.signature).decode(events)
    # One poison forces the slow path for the whole batch; the rest must be identical.
    mixed = Decoder(linear.signature).decode([*events, _ev([1, "x", 2, 3])])
    assert len(clean.groups) == len(mixed.groups) == 1
    np.testing.assert_array_equal(clean.groups[0].feeds["x"], mixed.groups[0].feeds["x"])
    assert clean.groups[0].feeds["x"].dtype == np.float32
    assert clean.groups[0].ids == list(range(200))


def test_bool_hidden_in_a_batch_is_caught_without_dropping_neighbours(linear: Model) -> None:
    events = [_ev(GOOD, id=i, note="true story") for i in range(5)]
    events[3] = _ev([1, False, 2, 3], id=3)
    out = Decoder(linear.signature).decode(events)
    assert [(i, "boolean" in str(e)) for i, e in out.rejects] == [(3, True)]
    assert out.groups[0].ids == [0, 1, 2, 4]
    assert out.groups[0].feeds["x"].shape == (4, 4)


def test_integers_and_object_form_are_accepted(linear: Model) -> None:
    out = Decoder(linear.signature).decode([_ev([1, 2, 3, 4]), _ev({"x": [1, 2, 3, 4]}, id="k")])
    assert not out.rejects
    assert out.groups[0].ids == [None, "k"]
    assert out.groups[0].feeds["x"].tolist() == [[1.0, 2.0, 3.0, 4.0]] * 2


def test_multi_input_model(multi_model: Path) -> None:
    model = _model(multi_model)
    dec = Decoder(model.signature)
    good = _ev({"a": [1, 2, 3], "b": [[1, 2], [3, 4]]})
    out = dec.decode(
        [
            good,
            _ev([1, 2, 3]),  # flat array for a two-input model
            _ev({"a": [1, 2, 3]}),
            _ev({"a": [1, 2, 3], "b": [[1, 2], [3, 4.5]]}),  # non-integer for int64
            _ev({"a": [1, 2, 3], "b": [[1, 2], [3, 2**63]]}),  # beyond int64
            _ev({"a": [1, 2, 3], "b": [[1, 2, 3], [3, 4]]}),  # ragged
            _ev({"a": [1, 2, 3], "b": [[1.0, 2.0], [3.0, 4.0]]}),  # integral floats are fine
        ]
    )
    reasons = {i: str(e) for i, e in out.rejects}
    assert "must be an object keyed by input name (a, b)" in reasons[1]
    assert "missing input 'b'" in reasons[2]
    assert "features.b[1][1] = 4.5 is not an integer" in reasons[3]
    assert "out of range for int64" in reasons[4]
    assert "ragged" in reasons[5]
    assert len(out.groups) == 1
    assert out.groups[0].index == [0, 6]
    assert out.groups[0].feeds["b"].dtype == np.int64
    assert out.groups[0].feeds["b"].tolist() == [[[1, 2], [3, 4]]] * 2


def test_big_integers_stay_exact_next_to_floats(multi_model: Path) -> None:
    model = _model(multi_model)
    big = 2**60 + 1  # not representable as float64
    out = Decoder(model.signature).decode(
        [
            _ev({"a": [1, 2, 3], "b": [[1.0, 2.0], [3.0, 4.0]]}),
            _ev({"a": [1, 2, 3], "b": [[big, 2], [3, 4]]}),
            _ev({"a": [1, 2, 3], "b": [[1.0, big], [3, 4]]}),  # mixed inside one row
            _ev({"a": [1, 2, 3], "b": [[1, 2], [3, 2.0**60]]}),  # a float that large is not exact
        ]
    )
    reasons = {i: str(e) for i, e in out.rejects}
    assert list(reasons) == [3]
    assert "too large to be an exact integer" in reasons[3]
    b = out.groups[0].feeds["b"]
    assert b[1][0][0] == big and b[2][0][1] == big


def test_dynamic_axis_groups_rows_by_length(dynamic_model: Path) -> None:
    model = _model(dynamic_model)
    out = Decoder(model.signature).decode(
        [_ev([1, 2]), _ev([1, 2, 3]), _ev([5, 5]), _ev([[1]]), _ev([7, 7, 7])]
    )
    assert [i for i, _ in out.rejects] == [3]
    shapes = {tuple(g.index): g.feeds["seq"].shape for g in out.groups}
    assert shapes == {(0, 2): (2, 2), (1, 4): (2, 3)}


@pytest.mark.parametrize(
    ("elem", "good", "bad", "words"),
    [
        (TensorProto.BOOL, [True, False, True], [1, 0, 1], "is number; input v takes booleans"),
        (TensorProto.STRING, ["a", "b", "c"], ["a", 1, "c"], "is number; input v takes strings"),
        (TensorProto.INT8, [1, -2, 127], [1, 2, 128], "out of range for int8"),
        (TensorProto.UINT8, [0, 1, 255], [0, -1, 2], "out of range for uint8"),
        # An integral float out of range must not wrap round (300.0 used to become 44).
        (
            TensorProto.INT8,
            [1.0, -2.0, 127.0],
            [300.0, 1.0, 2.0],
            "= 300.0 is out of range for int8",
        ),
        (TensorProto.FLOAT16, [1.5, 2, 65504], [1, 2, 70000], "out of range for float16"),
        (TensorProto.DOUBLE, [1e300, 2, 3], [1, None, 3], "features[1] is null"),
    ],
)
def test_input_types(make_model, elem, good, bad, words) -> None:
    model = _model(make_model("typed", elem))
    out = Decoder(model.signature).decode([_ev(good), _ev(bad)])
    assert [i for i, _ in out.rejects] == [1]
    assert words in str(out.rejects[0][1])
    fed = out.groups[0].feeds["v"]
    assert fed.dtype == model.signature.inputs[0].dtype
    result = model.predict(out.groups[0].feeds)[0]
    assert result[0].tolist() == good


def test_rows_keep_their_batch_positions(linear: Model) -> None:
    out = Decoder(linear.signature).decode([b"x", _ev(GOOD, id="a"), b"y", _ev(GOOD, id="b")])
    assert isinstance(out.groups[0], Rows)
    assert out.groups[0].index == [1, 3]
    assert out.accepted == 2


def test_absurd_nesting_is_a_validation_error_not_a_crash(linear: Model) -> None:
    deep = b'{"features": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}"
    out = Decoder(linear.signature).decode([_ev(GOOD), deep, _ev(GOOD)])
    assert [i for i, _ in out.rejects] == [1]
    assert isinstance(out.rejects[0][1], ValidationError)
    assert out.groups[0].index == [0, 2]


def test_booleans_of_a_boolean_input_are_not_suspicious(tmp_path: Path) -> None:
    from onnx import helper

    from tests.models import _save

    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["flags"], ["f_out"]),
            helper.make_node("Identity", ["x"], ["x_out"]),
        ],
        "mixed",
        [
            helper.make_tensor_value_info("flags", TensorProto.BOOL, ["batch", 2]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2]),
        ],
        [
            helper.make_tensor_value_info("f_out", TensorProto.BOOL, ["batch", 2]),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, ["batch", 2]),
        ],
    )
    model = _model(_save(graph, tmp_path / "mixed.onnx"))
    out = Decoder(model.signature).decode(
        [_ev({"flags": [True, False], "x": [1, 2]}), _ev({"flags": [True, True], "x": [1, False]})]
    )
    assert [i for i, _ in out.rejects] == [1]
    assert "features.x[1] is boolean" in str(out.rejects[0][1])
    assert out.groups[0].feeds["flags"].tolist() == [[True, False]]


def test_ragged_strings_are_a_validation_error(make_model) -> None:
    from tests import models

    path = make_model("typed", TensorProto.STRING, width=2)
    assert models  # built through the shared helper
    model = _model(path)
    out = Decoder(model.signature).decode(
        [_ev(["a", "b"]), _ev([["a"], ["b", "c"]]), _ev(["a", ["b"]])]
    )
    assert [i for i, _ in out.rejects] == [1, 2]
    assert all(isinstance(e, ValidationError) for _, e in out.rejects)
