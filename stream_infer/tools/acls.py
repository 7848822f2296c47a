"""The ACLs a worker needs, from its configuration: as Kafka's commands, or applied directly.

One table (:func:`worker_acls`) serves the README, ``stream-infer acls`` (which
prints ``kafka-acls.sh`` commands, or applies them through an admin connection),
the Strimzi KafkaUser in ``deploy/kubernetes/strimzi`` (a test compares them) and
the tests of the secured broker, so what is documented is what is tested.

Kafka 3.0 and later (KIP-679) no longer ask an idempotent producer for
IDEMPOTENT_WRITE on the cluster: WRITE on a topic is enough. A transactional
producer needs WRITE and DESCRIBE on its transactional id; the worker's ids are
``stream-infer-<group>-<worker id>``, hence a prefixed ACL.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from stream_infer.config import Settings
from stream_infer.kafka.transactions import transactional_id

__all__ = ["Grant", "apply_acls", "kafka_acls_commands", "worker_acls"]


@dataclass(frozen=True)
class Grant:
    """Operations on one resource: ``kind`` is topic, group, transactional-id or cluster."""

    kind: str
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False


def worker_acls(settings: Settings, guarantee: str | None = None) -> list[Grant]:
    """What a worker of ``settings`` needs (for ``guarantee``, default: the configured one)."""
    topics = settings.topics
    group = settings.kafka.group_id
    grants = [Grant("topic", name, ("READ", "DESCRIBE")) for name in topics.inputs]
    grants += [Grant("topic", name, ("WRITE", "DESCRIBE")) for name in (topics.output,)]
    grants.append(Grant("topic", topics.dead_letter, ("WRITE", "DESCRIBE")))
    grants.append(Grant("group", group, ("READ",)))
    if (guarantee or settings.processing.guarantee) == "exactly_once":
        grants.append(
            Grant("transactional-id", transactional_id(group, ""), ("WRITE", "DESCRIBE"), True)
        )
    return grants


def kafka_acls_commands(grants: list[Grant], principal: str) -> list[str]:
    """``kafka-acls.sh`` lines that create ``grants`` (bootstrap and admin config as variables)."""
    lines = []
    for grant in grants:
        words = [
            "kafka-acls.sh", "--bootstrap-server", "$BOOTSTRAP", "--command-config",
            "$ADMIN_CONFIG", "--add", "--allow-principal", principal,
        ]  # fmt: skip
        for op in grant.operations:
            words += ["--operation", op]
        if grant.kind == "cluster":
            words.append("--cluster")
        else:
            words += [f"--{grant.kind}", grant.name]
        if grant.prefixed:
            words += ["--resource-pattern-type", "prefixed"]
        lines.append(" ".join(w if w.startswith("$") else shlex.quote(w) for w in words))
    return lines


def apply_acls(admin_conf: dict[str, Any], grants: list[Grant], principal: str) -> int:
    """Create the ACLs through an admin connection; returns how many bindings were created."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    kinds = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "transactional-id": ResourceType.TRANSACTIONAL_ID,
        "cluster": ResourceType.BROKER,
    }
    bindings = [
        AclBinding(
            kinds[g.kind],
            "kafka-cluster" if g.kind == "cluster" else g.name,
            ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL,
            principal,
            "*",
            getattr(AclOperation, op),
            AclPermissionType.ALLOW,
        )
        for g in grants
        for op in g.operations
    ]
    if not bindings:
        return 0
    admin = AdminClient(admin_conf)
    for future in admin.create_acls(bindings).values():
        future.result(timeout=30)
    return len(bindings)
