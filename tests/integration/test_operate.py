"""Operating a worker on the real broker: metrics, lag of the whole group, health, fast failover."""

from __future__ import annotations

import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from stream_infer.ops.lag import group_lag
from stream_infer.runtimes.worker import Worker
from tests.conftest import free_port
from tests.integration.conftest import (
    Feeder,
    events,
    process_config,
    read,
    running,
    send,
    topic_size,
    wait_for,
    wait_for_log,
    worker_process,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def status(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, "not listening"


def lag_by_partition(samples: Samples) -> dict[int, float]:
    return {
        int(dict(labels)["partition"]): v
        for (name, labels), v in samples.items()
        if name == "stream_infer_consumer_lag"
    }


def test_every_spec_metric_has_sensible_values_after_a_run(
    kafka, make_settings, linear_model: Path, runtime: str
) -> None:
    settings = make_settings(linear_model, partitions=3)
    topic = settings.topics.inputs[0]
    n, poison = 600, 4
    keys, values = events(n)
    send(kafka, topic, values + [b"not json"] * poison, keys + [b"bad"] * poison)
    with running(settings, runtime=runtime) as worker:
        port = worker.telemetry.port
        assert port
        read(kafka, settings.topics.output, n)
        # Lag is refreshed in the background; await a look taken after the commits.
        wait_for(
            lambda: (
                sum(lag_by_partition(scrape(port)).values()) == 0
                and len(lag_by_partition(scrape(port))) == 3
            ),
            30,
            "lag to reach zero on every partition",
            worker,
        )
        got = scrape(port)
        provider = worker.model.provider if worker.model else "?"
        assert status(port, "/readyz")[0] == 200 and status(port, "/healthz")[0] == 200
    group = (("group", settings.kafka.group_id),)
    assert got[("stream_infer_consumed_messages_total", (("topic", topic),))] == n + poison
    assert got[("stream_infer_predictions_total", ())] == n
    assert got[("stream_infer_dead_letters_total", (("stage", "decode"),))] == poison
    assert got[("stream_infer_dead_letters_total", (("stage", "validate"),))] == 0
    calls = got[("stream_infer_batch_size_count", ())]
    assert calls >= n / settings.batching.max_batch_size
    assert got[("stream_infer_batch_size_sum", ())] == n  # rows that reached the model
    assert got[("stream_infer_inference_duration_seconds_count", ())] == calls
    assert 0 < got[("stream_infer_inference_duration_seconds_sum", ())] < 60
    assert got[("stream_infer_end_to_end_latency_seconds_count", ())] == n + poison
    info = (("model", "demo"), ("provider", provider), ("version", "1"))
    assert got[("stream_infer_model_info", info)] == 1
    assert provider == "CPUExecutionProvider"
    assert got[("stream_infer_assigned_partitions", ())] == 3
    assert got[("stream_infer_desired_replicas", group)] == 1
    assert got[("stream_infer_group_members", group)] == 1
    assert got[("stream_infer_ready", ())] == 1 and got[("stream_infer_healthy", ())] == 1


def test_frozen_workers_lag_is_visible_on_the_healthy_one(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    partitions = 6
    # A long session: the frozen worker keeps its partitions for the whole test.
    settings = make_settings(
        linear_model,
        partitions=partitions,
        kafka={"consumer": {"session.timeout.ms": 60000}},
    )
    topic = settings.topics.inputs[0]
    port_a, port_b = free_port(), free_port()
    cfg_a = process_config(settings, tmp_path / "a.yaml", port_a, "frozen-a")
    cfg_b = process_config(settings, tmp_path / "b.yaml", port_b, "healthy-b")
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    with worker_process(cfg_a, log_a) as a, worker_process(cfg_b, log_b) as b:
        wait_for(lambda: status(port_a, "/readyz")[0] == 200, 60, "A ready")
        wait_for(lambda: status(port_b, "/readyz")[0] == 200, 60, "B ready")
        wait_for(
            lambda: (
                scrape(port_a)[("stream_infer_assigned_partitions", ())] == partitions / 2
                and scrape(port_b)[("stream_infer_assigned_partitions", ())] == partitions / 2
            ),
            60,
            "three partitions each",
        )
        os.kill(a.pid, signal.SIGSTOP)
        try:
            per_partition = 500
            for p in range(partitions):
                keys, values = events(per_partition, start=p * per_partition)
                send(kafka, topic, values, keys, partition=p)

            def truth() -> dict[int, int]:
                lag = group_lag({"bootstrap.servers": kafka}, settings.kafka.group_id, [topic])
                return {p.partition: p.lag for p in lag}

            # B drains its own three partitions; A's three keep their lag.
            wait_for(
                lambda: sorted(truth().values()) == [0, 0, 0, 500, 500, 500],
                60,
                "B to drain its partitions while A is frozen",
            )
            true_lag = truth()

            def close_enough() -> bool:
                seen = lag_by_partition(scrape(port_b))
                return all(
                    abs(seen.get(p, -1) - lag) <= 0.05 * max(lag, 1) for p, lag in true_lag.items()
                )

            wait_for(close_enough, 15, "B's gauge to show the frozen partitions' lag")
            frozen = [p for p, lag in true_lag.items() if lag]
            seen = lag_by_partition(scrape(port_b))
            assert all(seen[p] >= 0.95 * 500 for p in frozen), seen
        finally:
            os.kill(a.pid, signal.SIGCONT)
        wait_for(
            lambda: sum(lag_by_partition(scrape(port_b)).values()) == 0,
            60,
            "A to catch up once thawed",
        )
        for proc in (a, b):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(35) == 0


def test_readyz_waits_for_the_model_and_the_group(kafka, make_settings, make_model) -> None:
    from tests.integration.test_faults import _slow_model

    # Warm-up runs the model twice at ~1.5 s a run: a window in which the server answers
    # but the worker is not ready.
    model = _slow_model(make_model, seconds=1.5)
    settings = make_settings(model, partitions=1, batching={"max_batch_size": 2})
    worker = Worker(settings)
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run(worker, errors), daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.telemetry.port is not None, 30, "the metrics server")
        port = worker.telemetry.port
        assert port is not None
        first = status(port, "/readyz")
        assert first[0] == 503 and "model" in first[1], first
        assert status(port, "/healthz")[0] == 200  # loading is not being stuck
        wait_for(lambda: status(port, "/readyz")[0] == 200, 60, "ready", worker)
        assert worker.ready.is_set()
    finally:
        worker.stop()
        thread.join(60)
    assert not errors, errors


def _run(worker: Worker, errors: list[BaseException]) -> None:
    try:
        worker.run()
    except BaseException as exc:
        errors.append(exc)


def test_healthz_fails_when_outputs_are_never_acknowledged(
    kafka, make_settings, linear_model: Path
) -> None:
    # The producer holds its records for 15 minutes (linger.ms) instead of sending them:
    # outputs handed to librdkafka that never come back acknowledged while the broker
    # answers everything else, as in librdkafka's leaderless-partition stall. Only a
    # restart ends that: what /healthz is for.
    settings = make_settings(
        linear_model,
        partitions=1,
        kafka={"producer": {"linger.ms": 900000, "message.timeout.ms": 1000000}},
        health={"ack_timeout_s": 2.0},
        processing={"shutdown_timeout_s": 10},
    )
    keys, values = events(5)
    send(kafka, settings.topics.inputs[0], values, keys)
    with running(settings) as worker:
        port = worker.telemetry.port
        assert port is not None
        assert status(port, "/healthz")[0] == 200
        wait_for(lambda: status(port, "/healthz")[0] == 503, 30, "healthz to fail", worker)
        code, reason = status(port, "/healthz")
        assert code == 503 and "unacknowledged" in reason and "broker answers" in reason
        assert scrape(port)[("stream_infer_healthy", ())] == 0
        assert worker.counts() == (0, 0)
    # The shutdown flush sends what lingered: nothing was lost on the way.
    assert len(read(kafka, settings.topics.output, 5)) == 5


@pytest.mark.slow
def test_kill_9_and_restart_under_the_same_id_resumes_at_once(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    partitions = 6
    # A session far longer than the test: without static membership every crash would
    # leave the killed worker's partitions idle for 45 s (then a rebalance).
    settings = make_settings(
        linear_model,
        partitions=partitions,
        kafka={"consumer": {"session.timeout.ms": 45000, "heartbeat.interval.ms": 1000}},
    )
    topic = settings.topics.inputs[0]
    n = 30_000
    keys, values = events(n)
    feeder = Feeder(kafka, topic, values, keys, rate=3000)
    port_a, port_b = free_port(), free_port()
    cfg_a = process_config(settings, tmp_path / "a.yaml", port_a, "replica-a")
    cfg_b = process_config(settings, tmp_path / "b.yaml", port_b, "replica-b")
    log_b = tmp_path / "b.log"
    admin = AdminClient({"bootstrap.servers": kafka})

    def assignment_of(instance: str) -> set[int]:
        desc = admin.describe_consumer_groups([settings.kafka.group_id])[
            settings.kafka.group_id
        ].result(timeout=10)
        for m in desc.members:
            if m.group_instance_id == instance:
                return {tp.partition for tp in m.assignment.topic_partitions}
        return set()

    with worker_process(cfg_b, log_b) as b:
        a = None
        try:
            for crash in range(3):
                log_a = tmp_path / f"a{crash}.log"
                with worker_process(cfg_a, log_a) as a:
                    if crash == 0:
                        wait_for(
                            lambda: (
                                len(assignment_of("replica-a")) == 3
                                and assignment_of("replica-a") | assignment_of("replica-b")
                                == set(range(partitions))
                            ),
                            60,
                            "the cooperative rebalance to settle on three partitions each",
                        )
                        mine = assignment_of("replica-a")
                        mark = log_b.stat().st_size  # B's log from here on must show no revoke
                        feeder.start()  # the long drain starts: ~10 s of input
                    wait_for_log(log_a, "assigned", timeout=30)
                    # Back at once with the same partitions, by the group's own account.
                    assert assignment_of("replica-a") == mine
                    before = topic_size(kafka, settings.topics.output)
                    target = min(n, before + 1000)
                    wait_for(
                        lambda t=target: topic_size(kafka, settings.topics.output) >= t,
                        60,
                        "progress before the next crash",
                    )
                    os.kill(a.pid, signal.SIGKILL)
                    a.wait(10)
            with worker_process(cfg_a, tmp_path / "a-final.log") as a:
                wait_for_log(tmp_path / "a-final.log", "assigned", timeout=30)
                feeder.join(120)
                assert feeder.error is None, feeder.error
                outputs = read(kafka, settings.topics.output, n, timeout=120)
                ids = {r["value"]["id"] for r in outputs}
                assert ids == set(range(n)), f"{n - len(ids)} inputs without a prediction"
                a.send_signal(signal.SIGTERM)
                assert a.wait(35) == 0
        finally:
            b.send_signal(signal.SIGTERM)
            assert b.wait(35) == 0
    # B never gave anything away while A crashed and came back: no rebalance at all.
    during = log_b.read_text()[mark:].split("stopping", 1)[0]
    assert "revoking" not in during and "lost" not in during, during
    print(f"static membership: {n} inputs, {len(outputs) - n} duplicates over 3 crashes")


def test_an_id_taken_by_a_live_worker_stops_the_newcomer_or_the_old_one(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    settings = make_settings(linear_model, partitions=2)
    cfg_1 = process_config(settings, tmp_path / "1.yaml", free_port(), "twin")
    cfg_2 = process_config(settings, tmp_path / "2.yaml", free_port(), "twin")
    log_1, log_2 = tmp_path / "1.log", tmp_path / "2.log"
    with worker_process(cfg_1, log_1) as first:
        wait_for_log(log_1, "assigned")
        with worker_process(cfg_2, log_2) as second:
            # The broker fences the older member; it must stop with a line that says why.
            assert first.wait(60) == 1
            assert "processing.worker_id 'twin'" in log_1.read_text()
            second.send_signal(signal.SIGTERM)
            second.wait(35)
