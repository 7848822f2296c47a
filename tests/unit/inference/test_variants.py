"""Variants: the canary's key hashing and routing, the version rule, input compatibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from onnx import TensorProto

from stream_infer.inference.codec import Rows
from stream_infer.inference.envelope import Origins
from stream_infer.inference.variants import (
    CanaryRouter,
    Variant,
    incompatibility,
    key_bucket,
    routing_key,
    version_of,
)
from tests import models
from tests.records import Record


def test_key_bucket_is_blake2b_64_big_endian_modulo_10000() -> None:
    # Digests from coreutils, an implementation independent of Python's:
    #   printf '%s' KEY | b2sum -l 64
    known = {b"k1": 0x99DFA4B79D814120, b"user-42": 0x6FA0CA4D7BE6EFA6, b"": 0xE4A6A0577479B2B4}
    for key, digest in known.items():
        assert key_bucket(key) == digest % 10_000


def test_routing_key_prefers_the_kafka_key_then_the_id() -> None:
    assert routing_key(b"abc", 7) == b"abc"
    assert routing_key("abc", None) == b"abc"
    assert routing_key(None, 7) == routing_key(None, "7") == b"7"
    assert routing_key(None, None) is None
    assert routing_key(None, True) is None  # not an id the decoder would accept anyway


def _rows(n: int) -> Rows:
    return Rows(list(range(n)), [None] * n, {"x": np.zeros((n, 4), dtype=np.float32)})


def test_share_of_keys_routed_is_near_the_share_and_grows_by_adding_keys() -> None:
    keys: list[bytes | str | None] = [f"customer-{i}".encode() for i in range(20_000)]
    rows = _rows(len(keys))
    small = CanaryRouter(0.1).chosen(keys, rows)
    large = CanaryRouter(0.3).chosen(keys, rows)
    assert 0.09 < small.mean() < 0.11
    assert 0.29 < large.mean() < 0.31
    assert not (small & ~large).any()  # raising the share never moves a key back
    assert CanaryRouter(1.0).chosen(keys, rows).all()
    again = CanaryRouter(0.1).chosen(list(reversed(keys)), rows)
    assert (again[::-1] == small).all()  # position in the batch plays no part


def test_events_without_key_or_id_stay_with_the_primary() -> None:
    rows = Rows([0, 1, 2], [None, 5, "x"], {"x": np.zeros((3, 4), dtype=np.float32)})
    mask = CanaryRouter(1.0).chosen([None, None, None], rows)
    assert mask.tolist() == [False, True, True]


def test_version_is_the_files_own_else_the_configured(tmp_path: Path) -> None:
    stamped = models.loaded(models.linear(tmp_path / "a.onnx", version="2024-11-02"))
    plain = models.loaded(models.linear(tmp_path / "b.onnx"))
    assert version_of(stamped, "1", "fallback") == "2024-11-02"
    assert version_of(plain, "1", "fallback") == "1"
    assert version_of(plain, None, "canary") == "canary"


def test_compatibility_needs_the_same_inputs(tmp_path: Path) -> None:
    served = models.loaded(models.linear(tmp_path / "a.onnx")).signature
    retrained = models.loaded(models.linear(tmp_path / "b.onnx", seed=9)).signature
    wider = models.loaded(models.linear(tmp_path / "c.onnx", n_features=5)).signature
    more_classes = models.loaded(models.linear(tmp_path / "d.onnx", n_out=4)).signature
    ints = models.loaded(models.typed(tmp_path / "e.onnx", TensorProto.INT64, "x", 4)).signature
    other_name = models.loaded(models.typed(tmp_path / "f.onnx", TensorProto.FLOAT, "v", 4))
    assert incompatibility(served, retrained, "same") is None
    assert incompatibility(served, more_classes, "same") is None  # same names, wider scores
    assert "input x float[5] differs from the served x float[4]" in str(
        incompatibility(served, wider, "same")
    )
    assert "x int64[4]" in str(incompatibility(served, ints, "any"))
    assert "its inputs are v, the served model takes x" in str(
        incompatibility(served, other_name.signature, "any")
    )
    renamed = models.loaded(models.typed(tmp_path / "g.onnx", TensorProto.FLOAT, "x", 4))
    reason = incompatibility(served, renamed.signature, "same")
    assert reason is not None and "outputs are out" in reason and "reload_outputs: any" in reason
    assert incompatibility(served, renamed.signature, "any") is None


def test_canary_and_shadow_outputs_say_which_variant_answered(tmp_path: Path) -> None:
    model = models.loaded(models.linear(tmp_path / "a.onnx"))
    rows = Rows([0], [3], {"x": np.ones((1, 4), dtype=np.float32)})
    outputs = model.predict(rows.feeds)

    records = [Record(offset_=9, value_=b"{}", timestamp_=5)]
    for role, extra in (("primary", {}), ("canary", {"variant": "canary"})):
        v = Variant.of(role, model, "m%d", "2%s")  # type: ignore[arg-type]
        doc = orjson.loads(v.encoder.encode(records, rows, outputs, Origins.of(records))[0])
        assert doc["model"] == "m%d" and doc["model_version"] == "2%s"
        assert {k: doc[k] for k in doc if k == "variant"} == extra
        assert doc["outputs"]["best"] == int(outputs[1][0])


@pytest.mark.parametrize("share", [0.0, -0.1, 1.01])
def test_a_share_outside_the_range_is_a_config_error(share: float) -> None:
    from stream_infer.config import Settings

    with pytest.raises(ValueError, match=r"canary\.share"):
        Settings(model={"canary": {"path": "c.onnx", "share": share}})
