"""Model operations on the real broker: hot reload, refused replacements, shadow, canary."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from stream_infer.config import Settings
from stream_infer.runtimes.worker import Worker
from tests import models
from tests.integration.conftest import (
    Feeder,
    events,
    read,
    running,
    send,
    wait_for,
)
from tests.integration.test_operate import scrape


def _replace(source: Path, target: Path) -> None:
    """What the runbook says: copy beside the served file, then rename over it."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _with_model(settings: Settings, **model: Any) -> Settings:
    """``make_settings``' settings with more keys in the model section."""
    data = settings.model_dump(mode="json", by_alias=True)
    data["model"].update(model)
    return Settings(**data)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _features(values: list[bytes]) -> dict[Any, np.ndarray]:
    """Input id -> its feature row, from the events as sent."""
    docs = [orjson.loads(v) for v in values]
    return {d["id"]: np.asarray(d["features"], dtype=np.float32) for d in docs}


def _check_values(
    docs: list[dict[str, Any]], rows: dict[Any, np.ndarray], by_version: dict
) -> None:
    """Each prediction equals what the model of its stamped version returns for its row alone."""
    for doc in docs:
        session = by_version[doc["model_version"]]
        scores, best = session.run(None, {"x": rows[doc["id"]][None, :]})
        np.testing.assert_allclose(doc["outputs"]["scores"], scores[0], rtol=1e-5, atol=1e-5)
        assert doc["outputs"]["best"] == int(best[0])


def _spy_batches(worker: Worker) -> dict[int, set[str]]:
    """The versions in each batch's predictions, as the inference thread hands them over."""
    seen: dict[int, set[str]] = defaultdict(set)
    deliveries = worker._deliveries
    original = deliveries.predictions_for

    def predictions_for(batch: Any, index: Any, payloads: Any) -> None:
        seen[batch.seq].update(orjson.loads(p)["model_version"] for p in payloads)
        original(batch, index, payloads)

    deliveries.predictions_for = predictions_for  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_hot_reload_mid_stream_switches_between_batches_and_loses_nothing(
    kafka, make_settings, tmp_path: Path, guarantee: str
) -> None:
    served = models.linear(tmp_path / "model.onnx")
    v1 = shutil.copyfile(served, tmp_path / "v1.onnx")
    v2 = models.linear(tmp_path / "v2.onnx", seed=8, version="2")
    settings = _with_model(
        make_settings(
            served,
            partitions=3,
            batching={"max_batch_size": 16},
            processing={"guarantee": guarantee},
        ),
        reload_interval_s=0.2,
    )
    n = 2400
    keys, values = events(n)
    with running(settings) as worker:
        batches = _spy_batches(worker)
        feeder = Feeder(kafka, settings.topics.inputs[0], values, keys, rate=600)
        feeder.start()
        wait_for(lambda: sum(worker.counts()) >= 400, 60, "the first predictions", worker)
        _replace(v2, served)
        wait_for(lambda: worker._ops.metrics.reloads["ok"] == 1, 30, "the reload", worker)
        feeder.join(60)
        assert feeder.error is None and feeder.sent == n
        got = read(kafka, settings.topics.output, n)
        assert worker.telemetry.metrics.version == "2"
    docs = [r["value"] for r in got]
    sources = [(d["source"]["partition"], d["source"]["offset"]) for d in docs]
    assert len(sources) == len(set(sources)) == n  # every input exactly one prediction
    versions = {d["model_version"] for d in docs}
    assert versions == {"1", "2"}
    for seq, found in batches.items():
        assert len(found) == 1, f"batch {seq} carries versions {found}"
    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for d in docs:
        by_partition[d["source"]["partition"]].append((d["source"]["offset"], d["model_version"]))
    for partition, stamped in by_partition.items():
        order = [version for _, version in sorted(stamped)]
        switch = order.index("2") if "2" in order else len(order)
        assert set(order[switch:]) <= {"2"}, f"partition {partition} goes back to v1"
    _check_values(docs, _features(values), {"1": _session(v1), "2": _session(v2)})


def test_corrupt_or_incompatible_replacements_keep_the_old_model_serving(
    kafka, make_settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    served = models.linear(tmp_path / "model.onnx")
    v1 = shutil.copyfile(served, tmp_path / "v1.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not an ONNX model" * 20)
    wide = models.linear(tmp_path / "wide.onnx", n_features=5, version="3")
    settings = _with_model(
        make_settings(served, partitions=2),
        reload_interval_s=0.2,
    )
    topic = settings.topics.inputs[0]
    caplog.set_level(logging.INFO, logger="stream_infer")
    all_values: list[bytes] = []
    with running(settings) as worker:
        refused = worker._ops.metrics.reloads
        for round_, replacement in enumerate([None, garbage, wide]):
            if replacement is not None:
                _replace(replacement, served)
                wait_for(lambda r=round_: refused["refused"] == r, 30, "the refusal", worker)
            keys, values = events(50, start=50 * round_)
            send(kafka, topic, values, keys)
            all_values += values
            got = read(kafka, settings.topics.output, len(all_values))
            assert len(got) == len(all_values)
        assert refused == {"ok": 0, "refused": 2}
    docs = [r["value"] for r in got]
    assert {d["model_version"] for d in docs} == {"1"}
    _check_values(docs, _features(all_values), {"1": _session(v1)})
    lines = [r.getMessage() for r in caplog.records if "hot reload refused" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "is not a valid ONNX model (" in lines[0]
    assert lines[0].endswith("; still serving demo v1")
    assert "input x float[5] differs from the served x float[4]; still serving demo v1" in lines[1]


def test_shadow_predictions_go_to_the_shadow_topic_only_with_agreement_metrics(
    kafka, make_settings, make_topic, tmp_path: Path
) -> None:
    primary = models.linear(tmp_path / "v1.onnx")
    candidate = models.linear(tmp_path / "v2.onnx", seed=8, version="s2")
    shadow_topic = make_topic("shadow", 2)
    settings = _with_model(
        make_settings(primary, partitions=2),
        shadow={"path": str(candidate), "topic": shadow_topic, "max_queued_batches": 64},
    )
    n = 400
    keys, values = events(n)
    send(kafka, settings.topics.inputs[0], values, keys)
    with running(settings) as worker:
        main = read(kafka, settings.topics.output, n)
        shadow = read(kafka, shadow_topic, n)
        wait_for(
            lambda: worker._ops.metrics.shadow_records["delivered"] == n, 30, "shadow acks", worker
        )
        samples = scrape(worker.telemetry.port or 0)
    rows = _features(values)
    assert len(main) == n and len(shadow) == n
    assert {d["value"]["model_version"] for d in main} == {"1"}
    assert all("variant" not in d["value"] for d in main)
    _check_values([d["value"] for d in main], rows, {"1": _session(primary)})
    assert {d["value"]["model_version"] for d in shadow} == {"s2"}
    assert {d["value"]["variant"] for d in shadow} == {"shadow"}
    assert {d["key"] for d in shadow} == {k.decode() for k in keys}
    _check_values([d["value"] for d in shadow], rows, {"s2": _session(candidate)})
    # Agreement computed here from the two models, row by row.
    x = np.stack([rows[i] for i in range(n)])
    s1, b1 = _session(primary).run(None, {"x": x})
    s2, b2 = _session(candidate).run(None, {"x": x})
    expected = float((b1 == b2).mean())
    assert 0 < expected < 1  # the two versions really differ, sometimes
    agreement = "stream_infer_shadow_agreement"
    assert samples[(agreement, (("output", "best"),))] == pytest.approx(expected)
    assert samples[(agreement, (("output", "scores"),))] == pytest.approx(expected)
    diff = float(np.abs(s1 - s2).mean())
    got_diff = samples[("stream_infer_shadow_mean_abs_diff", (("output", "scores"),))]
    assert got_diff == pytest.approx(diff, rel=1e-4)


def test_a_shadow_failing_on_every_batch_costs_no_primary_prediction(
    kafka, make_settings, make_topic, tmp_path: Path
) -> None:
    primary = models.linear(tmp_path / "v1.onnx")
    broken = models.failing_linear(tmp_path / "broken.onnx", version="bad")
    shadow_topic = make_topic("shadow", 1)
    settings = _with_model(
        make_settings(primary, partitions=2),
        # Room for every batch: a shadow that is behind drops batches, and this one is slow
        # (each failing row is bisected down to itself).
        shadow={"path": str(broken), "topic": shadow_topic, "max_queued_batches": 64},
    )
    n = 300
    keys, values = events(n)  # every row's second feature is 1.5: the shadow fails on each
    send(kafka, settings.topics.inputs[0], values, keys)
    with running(settings) as worker:
        main = read(kafka, settings.topics.output, n)
        rows_failed = worker._ops.metrics.rows
        wait_for(
            lambda: rows_failed.get(("shadow", "bad", "failed"), 0) == n, 120, "shadow", worker
        )
        assert worker._ops.metrics.shadow_batches["failed"] >= 1
        assert worker._ops.metrics.shadow_batches["dropped"] == 0
    assert len(main) == n and {d["value"]["model_version"] for d in main} == {"1"}
    _check_values([d["value"] for d in main], _features(values), {"1": _session(primary)})
    assert read(kafka, shadow_topic, 1, timeout=3) == []
    assert read(kafka, settings.topics.dead_letter, 1, timeout=3) == []


def _bucket(key: bytes) -> int:
    """The README's routing rule, written out here: BLAKE2b-64 of the key, modulo 10,000."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % 10_000


def test_canary_routing_is_stable_per_key_across_restarts_and_near_its_share(
    kafka, make_settings, tmp_path: Path
) -> None:
    primary = models.linear(tmp_path / "v1.onnx")
    candidate = models.linear(tmp_path / "v2.onnx", seed=8)
    settings = _with_model(
        make_settings(primary, partitions=3),
        canary={"path": str(candidate), "version": "c2", "share": 0.2},
    )
    n = 1000
    keys, values = events(n)
    topic = settings.topics.inputs[0]
    send(kafka, topic, values, keys)
    with running(settings):
        first = read(kafka, settings.topics.output, n)
    # The same keys again, other ids and features, to a fresh worker of the same group.
    again = [orjson.dumps({"id": n + i, "features": [i % 5, 0.5, 3, -1]}) for i in range(n)]
    send(kafka, topic, again, keys)
    with running(settings):
        got = read(kafka, settings.topics.output, 2 * n)
    assert len(first) == n and len(got) == 2 * n
    by_version = {"1": _session(primary), "c2": _session(candidate)}
    _check_values([r["value"] for r in got], {**_features(values), **_features(again)}, by_version)
    version_of_key: dict[str, set[str]] = defaultdict(set)
    for rec in got:
        doc = rec["value"]
        version_of_key[rec["key"]].add(doc["model_version"])
        assert (doc.get("variant") == "canary") == (doc["model_version"] == "c2")
    assert all(len(v) == 1 for v in version_of_key.values())  # stable across restarts
    canary_keys = {k for k, v in version_of_key.items() if v == {"c2"}}
    assert 0.15 <= len(canary_keys) / n <= 0.25
    assert canary_keys == {k.decode() for k in keys if _bucket(k) < 2000}


def test_rows_the_canary_fails_on_are_predicted_by_the_primary(
    kafka, make_settings, tmp_path: Path
) -> None:
    primary = models.linear(tmp_path / "v1.onnx")
    broken = models.failing_linear(tmp_path / "c.onnx", version="c9")
    settings = _with_model(
        make_settings(primary, partitions=2),
        canary={"path": str(broken), "share": 1.0},
    )
    n = 120
    # The canary fails on rows whose second feature is 1.5 (odd ids), not on the others.
    values = [
        orjson.dumps({"id": i, "features": [i % 7, 0 if i % 2 == 0 else 1.5, 2, 1]})
        for i in range(n)
    ]
    keys = [f"k{i}".encode() for i in range(n)]
    send(kafka, settings.topics.inputs[0], values, keys)
    with running(settings) as worker:
        got = read(kafka, settings.topics.output, n)
        counted = dict(worker._ops.metrics.rows)
    docs = [r["value"] for r in got]
    assert sorted(d["id"] for d in docs) == list(range(n))
    for doc in docs:
        assert doc["model_version"] == ("c9" if doc["id"] % 2 == 0 else "1")
    _check_values(docs, _features(values), {"1": _session(primary), "c9": _session(broken)})
    assert read(kafka, settings.topics.dead_letter, 1, timeout=3) == []
    assert counted[("canary", "c9", "failed")] == n // 2
    assert counted[("canary", "c9", "predicted")] == n // 2
    assert counted[("primary", "1", "predicted")] == n // 2
