"""Drift and the data contract on the real broker, with a real Prometheus.

Drift: a linear model of 8 standard-normal features gets a baseline built by the real
``stream-infer drift baseline`` command from N(0, 1) events. A worker with that baseline is
then fed the same distribution (every PSI stays under 0.1), then events whose most
influential feature is shifted by two standard deviations: that feature's PSI passes 0.25
within one window while the others stay under 0.1, the score it weighs on most moves too, and
Prometheus fires ``StreamInferFeatureDrift`` for that feature only.

Data contract: events valid against ``stream-infer schema`` are predicted, events invalid
against it are dead-lettered at the validate stage, by a worker on the real broker.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest
from confluent_kafka import Producer
from jsonschema import Draft202012Validator
from onnx import numpy_helper

from tests.cli import run_cli
from tests.conftest import free_port
from tests.integration.conftest import read, running, send, wait_for, worker_process
from tests.integration.prom import prometheus, rules_for_tests
from tests.integration.test_operate import Samples, process_config, scrape, status

pytestmark = pytest.mark.slow

FEATURES = 8
WINDOW_S = 8.0
RATE = 400  # events per second: about 3,200 rows per window
SHIFT = 2.0  # standard deviations
ENOUGH_ROWS = 1000  # below this a stable window's PSI is noisy (E[PSI] ~ bins / rows)
QUIET, ACT = 0.1, 0.25  # the README's reading of PSI: stable below 0.1, act above 0.25


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


class NormalStream(threading.Thread):
    """Events with N(0, 1) features at ``RATE`` per second until stopped.

    Setting ``shift`` (feature -> offset in standard deviations) moves that feature for every
    event produced from then on.
    """

    def __init__(self, kafka: str, topic: str, seed: int) -> None:
        super().__init__(name="normal-stream", daemon=True)
        self.kafka, self.topic = kafka, topic
        self.rng = np.random.default_rng(seed)
        self.shift: dict[int, float] = {}
        self.stopped = threading.Event()
        self.sent = 0
        self.failures: list[Any] = []

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.kafka, "linger.ms": 5})
        start = time.monotonic()
        while not self.stopped.is_set():
            row = self.rng.standard_normal(FEATURES)
            for feature, offset in self.shift.items():
                row[feature] += offset
            value = orjson.dumps({"id": self.sent, "features": row.tolist()})
            producer.produce(
                self.topic,
                value,
                str(self.sent).encode(),
                on_delivery=lambda err, _m: self.failures.append(err) if err else None,
            )
            producer.poll(0)
            self.sent += 1
            ahead = self.sent / RATE - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)  # pacing the load, not waiting for an event
        producer.flush(30)

    def stop(self) -> None:
        self.stopped.set()
        self.join(60)
        assert not self.failures, self.failures[:3]


def _drift(samples: Samples) -> tuple[float, dict[str, float], dict[tuple[str, str], float]]:
    """Window rows, feature PSI by feature, output PSI by (output, index)."""
    rows = samples.get(("stream_infer_drift_window_rows", ()), 0.0)
    features, outputs = {}, {}
    for (name, labels), value in samples.items():
        tag = dict(labels)
        if name == "stream_infer_feature_drift_psi":
            assert tag["input"] == "x"
            features[tag["feature"]] = value
        elif name == "stream_infer_output_drift_psi":
            outputs[(tag["output"], tag["index"])] = value
    return rows, features, outputs


def _others_stay_quiet(features: dict[str, float], shifted: int) -> None:
    others = {f: v for f, v in features.items() if f != str(shifted)}
    assert len(others) == FEATURES - 1 and max(others.values()) < QUIET, others


def _most_influential(model: Path) -> tuple[int, int, float, float]:
    """The feature whose shift moves one score the most: (feature, score, its bias, weight)."""
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    w, b = weights["W"], weights["B"]
    # A score's spread over N(0, 1) inputs is the norm of its weight column.
    moved = np.abs(w) / np.linalg.norm(w, axis=0)
    feature, score = np.unravel_index(np.argmax(moved), moved.shape)
    # Two standard deviations of the feature move that score by more than one of its own:
    # a shift a 10-bin PSI cannot miss (about 1 for a normal moved by one sigma).
    assert SHIFT * moved[feature, score] > 1.0, moved
    return int(feature), int(score), float(b[score]), float(w[feature, score])


def test_a_shifted_feature_drifts_alone_and_fires_its_alert(
    kafka, make_settings, make_model, tmp_path: Path
) -> None:
    model = make_model("linear", FEATURES, 3)
    shifted, score, bias, weight = _most_influential(model)
    baseline = tmp_path / "linear.baseline.json"
    settings = make_settings(
        model, partitions=3, drift={"baseline": str(baseline), "window_s": WINDOW_S}
    )
    group = settings.kafka.group_id
    port = free_port()
    config = process_config(settings, tmp_path / "worker.yaml", port, None)

    # The baseline, built by the real command from 20,000 N(0, 1) events with the same config.
    reference = np.random.default_rng(1).standard_normal((20_000, FEATURES))
    events = tmp_path / "reference.jsonl"
    events.write_bytes(
        b"\n".join(orjson.dumps({"id": i, "features": r}) for i, r in enumerate(reference.tolist()))
    )
    built = _cli(
        "drift",
        "baseline",
        "--config",
        str(config),
        "--events",
        str(events),
        "--out",
        str(baseline),
    )
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == (
        f"wrote {baseline}: 20000 rows, {FEATURES} input features, 4 output values"
    )

    feed = NormalStream(kafka, settings.topics.inputs[0], seed=2)
    rules = rules_for_tests(tmp_path / "rules.yml")
    with (
        worker_process(config, tmp_path / "worker.log") as worker,
        prometheus(tmp_path, [port], rules) as prom,
    ):
        wait_for(lambda: status(port, "/readyz")[0] == 200, 90, "worker ready")
        feed.start()
        try:
            # 1. The reference distribution: every PSI stays under 0.1, scrape after scrape.
            stable_output = 0.0
            checked = 0

            def stable() -> bool:
                nonlocal stable_output, checked
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                rows, features, outputs = _drift(scrape(port))
                if rows < ENOUGH_ROWS:
                    return False
                assert len(features) == FEATURES and len(outputs) == 4
                assert max(features.values()) < QUIET, features
                assert max(outputs.values()) < QUIET, outputs
                stable_output = max(stable_output, outputs[("scores", str(score))])
                checked += 1
                return checked >= 20

            wait_for(stable, 60, "20 scrapes of a full enough window")
            recorded = f'group_input_feature:stream_infer_feature_drift_psi:max{{group="{group}"}}'
            wait_for(lambda: len(prom.query(recorded)) == FEATURES, 30, "Prometheus sees PSIs")
            assert all(float(r["value"][1]) < QUIET for r in prom.query(recorded))
            drift_alerts = f'ALERTS{{alertname="StreamInferFeatureDrift",group="{group}"}}'
            assert prom.query(drift_alerts) == []  # neither pending nor firing

            # 2. One feature moves by two standard deviations.
            feed.shift = {shifted: SHIFT}
            moved = time.monotonic()

            def only_shifted_drifts() -> bool:
                _, features, _ = _drift(scrape(port))
                _others_stay_quiet(features, shifted)
                return features[str(shifted)] > ACT

            wait_for(only_shifted_drifts, 60, f"feature {shifted} PSI over {ACT}")
            took = time.monotonic() - moved
            # Over 0.25 once about a third of the window is shifted (0.16 at 20%, 0.67 at 50%).
            assert took < WINDOW_S, f"PSI crossed {ACT} after {took:.1f}s, window {WINDOW_S}s"

            # Once the window holds shifted rows only, the score's mean is the shifted one.
            expected_mean = bias + SHIFT * weight
            mean_key = (
                "stream_infer_output_window_mean",
                (("index", str(score)), ("output", "scores")),
            )

            def window_all_shifted() -> bool:
                samples = scrape(port)
                _others_stay_quiet(_drift(samples)[1], shifted)
                return abs(samples[mean_key] - expected_mean) < 0.15

            wait_for(window_all_shifted, 4 * WINDOW_S + 30, "a window of shifted rows only")
            rows, features, outputs = _drift(scrape(port))
            assert rows >= ENOUGH_ROWS
            assert features[str(shifted)] > ACT
            _others_stay_quiet(features, shifted)
            assert outputs[("scores", str(score))] > max(ACT, stable_output), outputs

            # 3. Prometheus fires the feature alert for that feature, and for no other.
            wait_for(
                lambda: prom.firing(
                    "StreamInferFeatureDrift", group=group, input="x", feature=str(shifted)
                ),
                60,
                "StreamInferFeatureDrift firing",
            )
            named = {a["feature"] for a in (r["metric"] for r in prom.query(drift_alerts))}
            assert named == {str(shifted)}
            wait_for(
                lambda: prom.firing(
                    "StreamInferOutputDrift", group=group, output="scores", index=str(score)
                ),
                60,
                "StreamInferOutputDrift firing",
            )
        finally:
            feed.stop()


# -- the data contract ---------------------------------------------------------------------

F32_MAX = 3.4028234663852886e38

# Per model: events the schema accepts, and events (JSON objects all) it refuses.
CONTRACT: dict[str, tuple[list[Any], list[Any]]] = {
    "linear": (
        [
            {"id": 1, "features": [0.5, -1, 2e10, 0]},
            {"id": "a-2", "features": [1, 2, 3, 4], "sent_by": "team-x"},
            {"features": {"x": [0.0, 0.1, 0.2, 0.3]}},
            {"id": None, "features": [-F32_MAX, F32_MAX, 1e-45, 0]},
        ],
        [
            {"id": 10, "features": [1, 2, 3]},  # too short
            {"id": 11, "features": [1, 2, 3, 4, 5]},  # too long
            {"id": 12, "features": [1, "2", 3, 4]},  # a string
            {"id": 13, "features": [1, True, 3, 4]},  # a boolean is not 0/1
            {"id": 14, "features": [1, None, 3, 4]},
            {"id": 15, "features": [1, 1e39, 3, 4]},  # float32 overflow
            {"id": 16, "features": [[1, 2], [3, 4]]},  # nested
            {"id": 17, "features": {"y": [1, 2, 3, 4]}},  # unknown input name
            {"id": 18, "features": None},
            {"id": 19},  # no features
            {"id": [1], "features": [1, 2, 3, 4]},  # an id that is neither string nor integer
        ],
    ),
    "multi_input": (
        [
            {"id": 1, "features": {"a": [1.5, 2, 3], "b": [[1, 2], [3, 4]]}},
            {"id": 2, "features": {"a": [0, 0, 0], "b": [[-(2**63), 0], [0, 2**63 - 1]]}},
            {"id": "x", "features": {"a": [1e30, -1e30, 0], "b": [[0, 0], [0, 0]]}, "more": 1},
        ],
        [
            {"id": 10, "features": {"a": [1, 2, 3], "b": [[1.5, 2], [3, 4]]}},  # non-integer
            {"id": 11, "features": {"a": [1, 2, 3], "b": [[2**63, 0], [0, 0]]}},  # out of int64
            {"id": 12, "features": {"a": [1, 2, 3]}},  # b missing
            {"id": 13, "features": {"a": [1, 2, 3], "b": [[1, 2], [3, 4]], "c": [1]}},
            {"id": 14, "features": [1, 2, 3]},  # an array for a model with two inputs
            {"id": 15, "features": {"a": [1, 2, 3], "b": [[1, 2], [3]]}},  # ragged
            {"id": 16, "features": {"a": [1, 2, 3], "b": [[1, 2], [3, True]]}},
        ],
    ),
}


@pytest.mark.parametrize("kind", sorted(CONTRACT))
def test_what_the_schema_accepts_is_predicted_and_what_it_refuses_dead_lettered(
    kafka, make_settings, make_model, tmp_path: Path, kind: str
) -> None:
    settings = make_settings(make_model(kind), partitions=2)
    config = process_config(settings, tmp_path / "worker.yaml", 0, None)
    printed = _cli("schema", "--config", str(config))
    assert printed.returncode == 0, printed.stderr
    validator = Draft202012Validator(orjson.loads(printed.stdout))
    good, bad = CONTRACT[kind]
    # The corpus is what it says it is, by the schema a producer team would use.
    assert [validator.is_valid(e) for e in good] == [True] * len(good)
    assert [validator.is_valid(e) for e in bad] == [False] * len(bad)

    keys = [f"good-{i}".encode() for i in range(len(good))]
    keys += [f"bad-{i}".encode() for i in range(len(bad))]
    # The standard library writes any integer exactly (orjson stops at 64 bits).
    values = [json.dumps(e).encode() for e in good + bad]
    send(kafka, settings.topics.inputs[0], values, keys)
    with running(settings):
        predictions = read(kafka, settings.topics.output, len(good))
        letters = read(kafka, settings.topics.dead_letter, len(bad))
    assert sorted(p["key"] for p in predictions) == sorted(k.decode() for k in keys[: len(good)])
    assert sorted(d["key"] for d in letters) == sorted(k.decode() for k in keys[len(good) :])
    assert {d["headers"]["dlq.error.stage"] for d in letters} == {"validate"}
    sent = dict(zip((k.decode() for k in keys), good + bad, strict=True))
    assert all(d["value"] == sent[d["key"]] for d in letters)  # the event as it was sent
