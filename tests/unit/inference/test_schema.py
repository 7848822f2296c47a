"""The input-event JSON Schema agrees with the worker's decoder, both ways, over a poison corpus.

Every event is judged twice: by ``Decoder`` (what the worker does) and by a
draft 2020-12 validator on the schema ``stream-infer schema`` prints. Events
the decoder refuses as undecodable (stage ``decode``) are outside any schema
and are left out; for every other event the two verdicts must match. The few
differences JSON Schema cannot express are pinned in their own test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from onnx import TensorProto, helper

from stream_infer.errors import DecodeError, ValidationError
from stream_infer.inference.codec import Decoder
from stream_infer.inference.model import InputSpec, Signature
from stream_infer.inference.schema import input_schema, schema_text
from tests.integration.test_poison import POISON as KAFKA_POISON
from tests.models import _save, loaded
from tests.unit.inference.test_codec import POISON as CODEC_POISON

F32_ROUNDS_TO_INF = 2**128 - 2**103  # the smallest double that float32 rounds to infinity


def _dumps(doc: Any) -> bytes:
    # The standard library writes integers of any size exactly (orjson stops at 64 bits).
    return json.dumps(doc).encode()


def _event(features: Any, **extra: Any) -> bytes:
    return _dumps({"features": features, **extra})


def _model_with_input(path: Path, elem: int, shape: list[Any]) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["v"], ["out"])],
        "shaped",
        [helper.make_tensor_value_info("v", elem, ["batch", *shape])],
        [helper.make_tensor_value_info("out", elem, ["batch", *shape])],
    )
    return _save(graph, path)


# -- the corpus --------------------------------------------------------------------------


def _good_value(spec: InputSpec, rng: np.random.Generator) -> Any:
    shape = tuple(2 if d is None else d for d in spec.shape)
    if spec.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool).tolist()
    if spec.kind == "O":
        return np.full(shape, "text", dtype=object).tolist()
    if spec.kind in "iu":
        info = np.iinfo(spec.dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), size=shape).tolist()
    return np.round(rng.normal(size=shape), 3).tolist()


def _scalars(spec: InputSpec) -> list[Any]:
    """Element values on both sides of every line the decoder draws for this dtype."""
    common: list[Any] = [None, "1", True, False, [], {"v": 1}, 0, 1, -1, 2.5, 1.0]
    if spec.kind in "iu":
        info = np.iinfo(spec.dtype)
        lo, hi = int(info.min), int(info.max)
        common += [lo, hi, lo - 1, hi + 1, float(hi // 2), 1e2, 1.5, -0.5, 2**64, -(2**63) - 1]
        common += [float(2**53 - 1), float(-(2**53 - 1))]
    if spec.dtype.name == "float32":
        top = F32_ROUNDS_TO_INF
        common += [1e38, 3.4028234663852886e38, float(np.nextafter(float(top), 0))]
        common += [float(top), -float(top), 1e39, -1e39]
        common += [top - 2**74 - 1, top - 2**74, top - 2**74 + 1, 2**64 - 1, 2**64, 10**30]
    if spec.dtype.name == "float16":
        common += [65504, 65519, 65519.99, 65520, 65520.0, -65520, 70000, 1e-8]
    if spec.dtype.name == "float64":
        common += [1.7976931348623157e308, -1.7976931348623157e308, 2**64, 10**30, 5e-324]
    if spec.kind == "O":
        common += ["", "a", "ü", "1.5"]
    return common


def _set_first(value: Any, leaf: Any) -> Any:
    """A copy of a per-row value with its first element replaced."""
    if not isinstance(value, list):
        return leaf
    if not value:
        return [leaf]
    return [_set_first(value[0], leaf), *value[1:]]


def _row_variants(spec: InputSpec, good: Any) -> Iterator[Any]:
    for leaf in _scalars(spec):
        yield _set_first(good, leaf)
    yield good
    yield [good]  # nested one level too deep
    yield None
    yield "text"
    yield 3
    yield {"v": good}
    if isinstance(good, list):
        yield good[:-1]  # too short
        yield [*good, good[-1]]  # too long
        yield []
        yield good[0]  # one level too shallow
        yield [*good[:-1], [good[-1]]]  # one element nested
        if good and isinstance(good[0], list):
            yield [good[0][:-1], *good[1:]]  # ragged
            yield [good[0], *(g + g for g in good[1:])]


def _events(signature: Signature, seed: int = 0) -> Iterator[bytes]:
    rng = np.random.default_rng(seed)
    specs = signature.inputs
    goods = {spec.name: _good_value(spec, rng) for spec in specs}
    single = len(specs) == 1
    whole = goods[specs[0].name] if single else goods
    yield _event(whole)
    yield _event(whole, id="k-1", other={"ignored": [1, None]})
    for ident in [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, None]:
        yield _event(whole, id=ident)
    for ident in [1.5, True, [1], {"a": 1}, 1e20, "", "x" * 300]:
        yield _event(whole, id=ident)
    for spec in specs:
        for variant in _row_variants(spec, goods[spec.name]):
            named = {**goods, spec.name: variant}
            yield _event(named)
            if single:
                yield _event(variant)
    yield _event({})
    yield _event({**goods, "zz_unknown": 1})
    yield _event({k.upper() + "_": v for k, v in goods.items()})
    if len(specs) > 1:
        yield _event(list(goods.values()))
        yield _event(dict(list(goods.items())[1:]))
    yield _event(None)
    yield _dumps({"id": 1})
    for top in ([1, 2], "text", None, 1.5, True):
        yield _dumps(top)


# -- the agreement -------------------------------------------------------------------------


def _verdicts(signature: Signature, events: list[bytes | None]) -> list[tuple[bytes, bool, bool]]:
    """(event, decoder accepts, schema accepts) for every event that is valid JSON."""
    schema = input_schema(signature, "m", "1")
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    decoder = Decoder(signature)
    out = []
    for raw in events:
        decoded = decoder.decode([raw])
        if decoded.rejects and type(decoded.rejects[0][1]) is DecodeError:
            continue
        assert raw is not None
        if decoded.rejects:
            assert type(decoded.rejects[0][1]) is ValidationError
        out.append((raw, bool(decoded.groups), validator.is_valid(json.loads(raw))))
    return out


@pytest.fixture(scope="module")
def signatures(
    linear_model: Path, multi_model: Path, dynamic_model: Path, demo_model: Path, model_dir: Path
) -> dict[str, Signature]:
    found = {
        "linear": loaded(linear_model).signature,
        "multi": loaded(multi_model).signature,
        "dynamic": loaded(dynamic_model).signature,
        "demo": loaded(demo_model).signature,
    }
    typed = {
        "bool": TensorProto.BOOL,
        "string": TensorProto.STRING,
        "int8": TensorProto.INT8,
        "uint8": TensorProto.UINT8,
        "int32": TensorProto.INT32,
        "int64": TensorProto.INT64,
        "uint64": TensorProto.UINT64,
        "float16": TensorProto.FLOAT16,
        "double": TensorProto.DOUBLE,
    }
    for name, elem in typed.items():
        found[name] = loaded(
            _model_with_input(model_dir / f"schema-{name}.onnx", elem, [3])
        ).signature
    found["scalar"] = loaded(
        _model_with_input(model_dir / "schema-scalar.onnx", TensorProto.FLOAT, [])
    ).signature
    found["matrix-int"] = loaded(
        _model_with_input(model_dir / "schema-matrix.onnx", TensorProto.INT16, [2, 3])
    ).signature
    found["inner-dynamic"] = loaded(
        _model_with_input(model_dir / "schema-inner.onnx", TensorProto.FLOAT, [2, "len"])
    ).signature
    return found


MODELS = [
    "linear", "multi", "dynamic", "demo", "bool", "string", "int8", "uint8", "int32", "int64",
    "uint64", "float16", "double", "scalar", "matrix-int", "inner-dynamic",
]  # fmt: skip


def _known_difference(raw: bytes, signature: Signature) -> bool:
    """The three documented gaps (see stream_infer/inference/schema.py)."""
    doc = json.loads(raw)
    ident = doc.get("id")
    if isinstance(ident, float) and ident.is_integer():
        return True
    features = doc.get("features")
    values = features if isinstance(features, dict) else {signature.inputs[0].name: features}
    for spec in signature.inputs:
        value = values.get(spec.name)
        if spec.dtype.name in ("int64", "uint64") and any(
            isinstance(v, float) and v.is_integer() and abs(v) >= 2**53 for v in _flat(value)
        ):
            return True
        inner_dynamic = any(d is None for d in spec.shape[1:])
        if inner_dynamic and isinstance(value, list):
            lengths = {len(v) for v in value if isinstance(v, list)}
            if len(lengths) > 1:
                return True
    return False


def _flat(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for v in value:
            yield from _flat(v)
    else:
        yield value


@pytest.mark.parametrize("name", MODELS)
def test_schema_and_decoder_agree_on_every_event(signatures, name: str) -> None:
    signature = signatures[name]
    verdicts = _verdicts(signature, list(_events(signature)))
    differ = [
        (raw.decode(), decoder, schema)
        for raw, decoder, schema in verdicts
        if decoder != schema and not _known_difference(raw, signature)
    ]
    assert not differ, differ[:5]
    # The corpus has teeth: both verdicts occur, many times each.
    accepted = sum(1 for _, d, _ in verdicts if d)
    assert accepted >= 5 and len(verdicts) - accepted >= 20, (accepted, len(verdicts))


def test_the_poison_of_the_codec_and_kafka_tests_fails_the_schema(signatures) -> None:
    signature = signatures["linear"]
    events = [p.values[0] for p in CODEC_POISON] + [value for value, _, _ in KAFKA_POISON]
    verdicts = _verdicts(signature, events)
    assert len(verdicts) >= 25  # only the undecodable ones are left out
    assert all(not decoder and not schema for _, decoder, schema in verdicts), [
        (raw, d, s) for raw, d, s in verdicts if d or s
    ]


def test_the_known_differences_are_exactly_these(signatures) -> None:
    """JSON Schema accepts these; the decoder does not. If one starts agreeing, update the docs."""
    cases = [
        (signatures["linear"], _event([1, 2, 3, 4], id=3.0)),
        (signatures["int64"], _event([1, 2, 1e17])),
        (signatures["int64"], _event([1, 2, -float(2**53)])),
        (signatures["uint64"], _event([1, 2, float(2**60)])),
        (signatures["inner-dynamic"], _event([[1.0], [1.0, 2.0]])),
    ]
    for signature, raw in cases:
        [(_, decoder, schema)] = _verdicts(signature, [raw])
        assert (decoder, schema) == (False, True), raw
        assert _known_difference(raw, signature)
    # Just inside each gap, the two still agree.
    [(_, d1, s1)] = _verdicts(signatures["int64"], [_event([1, 2, float(2**53 - 1)])])
    [(_, d2, s2)] = _verdicts(signatures["inner-dynamic"], [_event([[1.0, 3.0], [1.0, 2.0]])])
    assert (d1, s1, d2, s2) == (True, True, True, True)


def test_float32_bounds_follow_the_decoder_to_the_last_double(signatures) -> None:
    top = F32_ROUNDS_TO_INF
    below = float(np.nextafter(float(top), 0))
    cases = {
        below: True,
        float(top): False,
        top - 2**74 - 1: True,  # an exact integer that the decoder reads as `below`
        top - 2**74: False,  # halfway: rounds to the even neighbour, `top`
        -below: True,
        -(top - 2**74): False,
    }
    for value, expected in cases.items():
        [(_, decoder, schema)] = _verdicts(signatures["linear"], [_event([value, 0, 0, 0])])
        assert decoder is schema is expected, (value, decoder, schema)


def test_the_schema_reads_as_the_contract(signatures) -> None:
    schema = input_schema(signatures["multi"], "multi", "7")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["features"]
    features = schema["properties"]["features"]
    assert features["required"] == ["a", "b"] and features["additionalProperties"] is False
    b = features["properties"]["b"]
    assert (b["minItems"], b["maxItems"], b["items"]["minItems"]) == (2, 2, 2)
    assert b["items"]["items"] == {
        "type": "integer",
        "minimum": -(2**63),
        "maximum": 2**63 - 1,
    }
    assert "multi v7" in schema["title"]
    validator = Draft202012Validator(schema)
    for example in schema["examples"]:
        assert validator.is_valid(example)
        out = Decoder(signatures["multi"]).decode([_dumps(example)])
        assert not out.rejects
    assert json.loads(schema_text(schema)) == schema
