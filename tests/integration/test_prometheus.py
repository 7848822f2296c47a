"""A real Prometheus scrapes real workers: every dashboard query, alert and the KEDA query work.

One scenario, phase by phase, so that each alert's condition really occurs:

1. two workers of group G drain demo events with 5% poison: the dashboard's queries all
   return data, the dead-letter ratio alert fires, the KEDA query says 1 replica once idle;
2. the events shift by two standard deviations on every feature: the drift alerts fire;
3. worker A is frozen (SIGSTOP) while more events arrive: it is down for Prometheus, the
   lag of its partitions (exported by B) grows past the alert's threshold, and the KEDA
   query asks for every partition's worth of replicas;
4. meanwhile a worker of another group never gets its outputs acknowledged: stalled;
5. every worker gone: no workers.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from stream_infer.config import Settings
from stream_infer.tools.demo import baseline_path, demo_dataset
from tests.conftest import free_port
from tests.integration.conftest import (
    ROOT,
    send,
    topic_size,
    unique,
    wait_for,
    worker_process,
)
from tests.integration.prom import (
    alert_rules,
    dashboard_queries,
    keda_query,
    prometheus,
    recording_rules,
    rules_for_tests,
)
from tests.integration.test_operate import process_config, scrape, status

pytestmark = pytest.mark.slow


def _demo_events(rows: np.ndarray, start: int, poison_every: int = 0) -> tuple[list, list]:
    keys, values = [], []
    for i, row in enumerate(rows.tolist()):
        n = start + i
        keys.append(f"bc-{n}".encode())
        if poison_every and n % poison_every == 0:
            values.append(b'{"id": "poison", "features": [1, 2, 3]}')
        else:
            values.append(orjson.dumps({"id": n, "features": row}))
    return keys, values


def _family(sample: str) -> str:
    """The catalogue name of a sample: histogram series fold into their histogram."""
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and not sample.endswith("_total"):
            return sample.removesuffix(suffix)
    return sample


def test_dashboard_alerts_and_keda_query_on_a_real_prometheus(
    kafka, make_settings, make_topic, demo_model: Path, linear_model: Path, tmp_path: Path
) -> None:
    partitions = 6
    settings = make_settings(
        demo_model,
        partitions=partitions,
        # A frozen worker must keep its partitions for the whole test (static ids too).
        kafka={"consumer": {"session.timeout.ms": 90000}},
        drift={"baseline": str(baseline_path(demo_model)), "window_s": 8},
        # Any lag at all asks for every partition's replica; none asks for one.
        scaling={"drain_target_s": 0.001},
    )
    # A shadow (the demo model again), so that the shadow's metrics and panels have data too.
    data = settings.model_dump(mode="json", by_alias=True)
    data["model"]["shadow"] = {"path": str(demo_model), "topic": make_topic("shadow", partitions)}
    settings = Settings(**data)
    group = settings.kafka.group_id
    topic = settings.topics.inputs[0]
    stalled = make_settings(
        linear_model,
        partitions=1,
        kafka={"producer": {"linger.ms": 900000, "message.timeout.ms": 1000000}},
    )
    ports = {"a": free_port(), "b": free_port(), "c": free_port()}
    cfg = {
        "a": process_config(settings, tmp_path / "a.yaml", ports["a"], unique("a")),
        "b": process_config(settings, tmp_path / "b.yaml", ports["b"], unique("b")),
        "c": process_config(stalled, tmp_path / "c.yaml", ports["c"], None),
    }
    x, _, _ = demo_dataset()
    returned: set[str] = set()  # alerts whose expression returned data at some point
    alerts = alert_rules()

    def check_alert_exprs(prom) -> None:
        for name, expr in alerts.items():
            if prom.query(expr):  # an evaluation error fails inside query()
                returned.add(name)

    rules = rules_for_tests(tmp_path / "rules.yml")
    with (
        worker_process(cfg["a"], tmp_path / "a.log") as a,
        worker_process(cfg["b"], tmp_path / "b.log") as b,
        worker_process(cfg["c"], tmp_path / "c.log") as c,
        prometheus(tmp_path, list(ports.values()), rules) as prom,
    ):
        for p in ports.values():
            wait_for(lambda p=p: status(p, "/readyz")[0] == 200, 90, "workers ready")
        # Counters must be seen at zero first, or their rate over the burst would be 0.
        wait_for(
            lambda: len(prom.query("stream_infer_predictions_total")) == 3, 60, "first scrapes"
        )
        keys, values = _demo_events(x[:10, :4], 0)
        send(kafka, stalled.topics.inputs[0], values, keys)

        # 1. Normal traffic with 5% poison, a backlog first so that capacity gets measured.
        rows = np.concatenate([x] * 12)
        keys, values = _demo_events(rows, 0, poison_every=20)
        send(kafka, topic, values, keys)
        wait_for(
            lambda: (
                topic_size(kafka, settings.topics.output)
                + topic_size(kafka, settings.topics.dead_letter)
                >= len(values)
            ),
            120,
            "phase 1 processed",
        )
        wait_for(lambda: prom.value(keda_query(group)) == 1, 60, "KEDA query: 1 replica when idle")
        wait_for(
            lambda: prom.firing("StreamInferDeadLetterRatioHigh", group=group),
            60,
            "dead-letter ratio alert",
        )
        # The worker exports exactly the catalogue that rules and dashboard are checked against.
        exported = {_family(name) for name, _ in scrape(ports["b"])}
        catalogue = set(yaml.safe_load((ROOT / "tests/data/metrics.yml").read_text())) - {"up"}
        assert exported == catalogue, (exported - catalogue, catalogue - exported)
        for title, expr in dashboard_queries(group):
            assert prom.query(expr), f"dashboard panel '{title}' has no data: {expr}"
        for name, expr in recording_rules().items():
            assert prom.query(expr), f"recording rule {name} has no data"
        check_alert_exprs(prom)

        # 2. Every feature shifted by two standard deviations: inputs and predictions drift.
        shifted = x + 2 * x.std(axis=0)
        keys, values = _demo_events(np.concatenate([shifted] * 4), 100_000)
        send(kafka, topic, values, keys)
        wait_for(lambda: prom.firing("StreamInferFeatureDrift", group=group), 90, "feature drift")
        wait_for(lambda: prom.firing("StreamInferOutputDrift", group=group), 90, "output drift")
        check_alert_exprs(prom)

        # 3. A frozen while the input keeps coming: down, lag high and growing, scale out.
        os.kill(a.pid, signal.SIGSTOP)
        try:
            for chunk in range(4):
                keys, values = _demo_events(np.concatenate([x] * 12), 200_000 + chunk * 10_000)
                send(kafka, topic, values, keys)
            wait_for(lambda: prom.firing("StreamInferWorkerDown"), 60, "worker down")
            wait_for(lambda: prom.firing("StreamInferLagHigh", group=group), 90, "lag high")
            assert prom.value(keda_query(group)) == partitions
            # 4. The other group's worker never gets an acknowledgement: stalled.
            wait_for(
                lambda: prom.firing("StreamInferStalled", group=stalled.kafka.group_id),
                60,
                "stalled group",
            )
            check_alert_exprs(prom)
        finally:
            os.kill(a.pid, signal.SIGCONT)

        # 5. Every worker gone.
        for proc in (a, b, c):
            proc.kill()
            proc.wait(10)
        wait_for(lambda: prom.firing("StreamInferNoWorkers"), 60, "no workers")
        check_alert_exprs(prom)
    assert returned == set(alerts), f"never returned data: {set(alerts) - returned}"
