"""One secured broker for the session (SASL_SSL, mTLS, ACLs), and settings that use it.

The broker is ``stream-infer broker start --secure``'s own launcher. Topics are
made and records sent and read through its PLAINTEXT listener, the admin's
(super user) door; workers connect as ``User:stream-infer`` over SASL_SSL (or
mTLS) and get exactly the ACLs of ``stream_infer.tools.acls.worker_acls``,
minus whatever a test leaves out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream_infer.config import Settings
from stream_infer.tools.acls import Grant, apply_acls, worker_acls
from stream_infer.tools.devbroker import stop_broker
from stream_infer.tools.securebroker import (
    USER,
    SecureBroker,
    secure_settings,
    start_secure_broker,
)
from stream_infer.tools.topics import TopicDecl, apply_topics
from tests.conftest import free_port
from tests.integration.conftest import _merge, unique

PRINCIPAL = f"User:{USER}"
# A group's coordinator answers these while it moves or loads; asking again is the cure.
_SETTLING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    data = tmp_path_factory.mktemp("secure-broker")
    broker = start_secure_broker(free_port(), free_port(), free_port(), data)
    try:
        yield broker
    finally:
        stop_broker(data)


def _topic(admin: str, prefix: str, partitions: int) -> str:
    name = unique(prefix)
    apply_topics({"bootstrap.servers": admin}, [TopicDecl(name=name, partitions=partitions)])
    return name


SecureSettings = Callable[..., Settings]


@pytest.fixture
def make_secure_settings(secure_broker: SecureBroker) -> SecureSettings:
    """Settings for a worker of fresh topics and group, granted its ACLs but ``drop``.

    ``drop`` gets the settings and returns, per resource name, the operations to
    leave out of its grant (all of them when empty); ``mtls`` connects with the
    client certificate instead of SCRAM.
    """

    def make(
        model: Path,
        guarantee: str = "at_least_once",
        drop: Callable[[Settings], dict[str, tuple[str, ...]]] | None = None,
        mtls: bool = False,
        partitions: int = 2,
        **sections: Any,
    ) -> Settings:
        admin = secure_broker.admin_bootstrap
        data: dict[str, Any] = {
            "kafka": {
                **secure_settings(secure_broker, mtls=mtls),
                "group_id": unique("group"),
                "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
            },
            "topics": {
                "inputs": [_topic(admin, "in", partitions)],
                "output": _topic(admin, "out", partitions),
                "dead_letter": _topic(admin, "dlq", 1),
            },
            "model": {"path": str(model)},
            "batching": {"max_batch_size": 64, "max_wait_ms": 5},
            "processing": {
                "guarantee": guarantee,
                "commit_interval_ms": 200,
                "shutdown_timeout_s": 20,
            },
            "metrics": {"port": 0, "lag_interval_s": 0.5},
        }
        settings = Settings(**_merge(data, sections))
        grants = []
        dropped = drop(settings) if drop is not None else {}
        for grant in worker_acls(settings):
            if grant.name in dropped:
                keep = tuple(op for op in grant.operations if op not in dropped[grant.name])
                if not dropped[grant.name] or not keep:
                    continue
                grant = Grant(grant.kind, grant.name, keep, grant.prefixed)
            grants.append(grant)
        apply_acls({"bootstrap.servers": admin}, grants, PRINCIPAL)
        return settings

    return make


def committed(admin: str, settings: Settings) -> dict[tuple[str, int], int]:
    """The group's committed offsets on its input partitions (only those it committed).

    A group's coordinator may move or still be loading: such answers are asked again.
    """
    topic = settings.topics.inputs[0]
    client = Consumer({"bootstrap.servers": admin, "group.id": settings.kafka.group_id})
    try:
        parts = client.list_topics(topic, timeout=10).topics[topic].partitions
        for attempt in range(50):
            try:
                found = client.committed([TopicPartition(topic, p) for p in parts], timeout=10)
            except KafkaException as exc:
                settling = exc.args[0].code() in _SETTLING or exc.args[0].retriable()
                if not settling or attempt == 49:
                    raise
                time.sleep(0.1)  # the coordinator settles on its own; nothing to wait on
                continue
            return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}
        raise AssertionError("unreachable")
    finally:
        client.close()
