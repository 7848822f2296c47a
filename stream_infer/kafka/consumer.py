"""The Kafka consumer: subscription, rebalance callbacks, pause/resume and commits.

The worker is told about rebalances through three hooks (assigned, revoked,
lost) that run inside ``consume`` on the worker's own thread; that is where
in-flight work is finished and committed before partitions are given away.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from stream_infer.errors import CommitError, KafkaClientError, StreamInferError, kafka_error_text
from stream_infer.kafka.admin import (
    WORKER_TIMEOUT_S,
    authorized_operations,
    missing_topic_hint,
    probe_cluster,
)
from stream_infer.kafka.offsets import TopicPartition as TP
from stream_infer.kafka.security import AUTHORIZATION, authentication_failure, denied
from stream_infer.logging import get_logger, where

__all__ = ["InputConsumer", "check_topics", "topic_acl_problem"]

log = get_logger("consumer")

PartitionHook = Callable[[list[TP]], None]

# A first assignment that takes longer than this gets one line saying what is awaited.
_ASSIGN_PATIENCE_S = 5.0

# Errors that come back as "messages" and only mean the broker is busy or away.
_TRANSIENT = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError._PARTITION_EOF,
}


_COMMIT_FATAL = {
    KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.INVALID_GROUP_ID, KafkaError.OFFSET_METADATA_TOO_LARGE,
}  # fmt: skip


def _tps(partitions: Iterable[TopicPartition]) -> list[TP]:
    return [(p.topic, p.partition) for p in partitions]


class InputConsumer:
    """One consumer-group member reading every input topic."""

    def __init__(
        self,
        conf: dict[str, Any],
        on_assigned: PartitionHook,
        on_revoked: PartitionHook,
        on_lost: PartitionHook,
    ) -> None:
        conf = dict(conf)
        self._conf = conf  # who we are, for the lines that say what we may not do
        conf.setdefault("logger", get_logger("librdkafka"))
        conf.setdefault("error_cb", self._on_error)
        conf["on_commit"] = self._on_commit
        self._client = Consumer(conf)
        self._session_timeout_ms = conf.get("session.timeout.ms", 45000)
        self._subscribed_at: float | None = None  # until the first partition is assigned
        self._hooks = (on_assigned, on_revoked, on_lost)
        self.paused = False
        self.fatal: BaseException | None = None
        self.commit_failures: list[tuple[list[TP], KafkaError]] = []
        self.failed_commits: dict[str, int] = {}  # asynchronous commits that failed, by error
        # Every assign/revoke/lost bumps the serial; revokes are logged with it so the
        # batcher can drop records it fetched before their partition changed hands.
        self._serial = 0
        self._revocations: list[tuple[int, set[TP]]] = []

    # -- callbacks (run inside consume/poll/close on this thread) ------------

    def _on_error(self, err: KafkaError) -> None:
        refused = authentication_failure(err, self._conf)
        if refused is not None:  # a wrong password or CA does not fix itself: stop
            self.fatal = self.fatal or KafkaClientError(refused)
            log.error("%s", refused)
        elif err.fatal():
            self.fatal = KafkaClientError("the consumer hit a fatal error", err)
            log.error("consumer fatal error: %s", kafka_error_text(err))
        else:
            log.warning("consumer: %s", kafka_error_text(err))

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = [p for p in partitions if p.error is not None]
        if err is None and not failed:
            return
        cause = err if err is not None else failed[0].error
        assert cause is not None
        if cause.code() == KafkaError._NO_OFFSET:
            return
        if cause.fatal() or cause.code() in _COMMIT_FATAL:
            # Nothing would ever be committed: every restart would redo everything.
            self.fatal = self._denied(cause, "commit offsets for") or CommitError(
                "offsets cannot be committed", cause
            )
            log.error("offset commit failed for good: %s", kafka_error_text(cause))
            return
        log.warning("offset commit failed (will retry): %s", kafka_error_text(cause))
        self.commit_failures.append((_tps(failed or partitions), cause))
        name = cause.name()
        self.failed_commits[name] = self.failed_commits.get(name, 0) + 1

    def _bump(self, revoked: list[TopicPartition] | None = None) -> None:
        self._serial += 1
        if revoked:
            self._revocations.append((self._serial, set(_tps(revoked))))
            del self._revocations[:-64]  # a batch spans a few rebalances at most

    def rebalances(self) -> int:
        """A serial that changes with every assignment change."""
        return self._serial

    def revoked_since(self, serial: int) -> set[TP]:
        """Partitions revoked or lost after ``serial`` was read."""
        out: set[TP] = set()
        for when, tps in self._revocations:
            if when > serial:
                out |= tps
        return out

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._bump()
        if partitions:
            self._subscribed_at = None
        consumer.incremental_assign(partitions)
        if partitions and self.paused:
            consumer.pause(partitions)  # new partitions join the backpressure
        log.info(
            "assigned %s",
            ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing new",
        )
        self._hooks[0](_tps(partitions))

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoking %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))
        self._bump(partitions)
        self._hooks[1](_tps(partitions))

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "lost %s: uncommitted work there will be redone by its next owner",
            ", ".join(f"{p.topic}[{p.partition}]" for p in partitions),
        )
        self._bump(partitions)
        self._hooks[2](_tps(partitions))

    # -- the consuming side ---------------------------------------------------

    def subscribe(self, topics: list[str]) -> None:
        self._client.subscribe(
            topics, on_assign=self._assign, on_revoke=self._revoke, on_lost=self._lost
        )
        self._subscribed_at = time.monotonic()

    def _say_what_we_wait_for(self) -> None:
        """One line when no partition comes within 5 s: otherwise the log is silent for ~45 s.

        The usual cause is a member that did not leave cleanly (kill -9, a crashed
        pod): the group waits for it until its session times out. With cooperative
        rebalancing a newcomer may first get an empty assignment while a member that
        holds the partitions has yet to give them up, so only partitions count.
        """
        since = self._subscribed_at
        if since is not None and time.monotonic() - since >= _ASSIGN_PATIENCE_S:
            self._subscribed_at = None
            log.info(
                "waiting for the group to assign partitions (a member that did not leave "
                "cleanly can hold them for up to session.timeout.ms=%s; with more members "
                "than partitions, some stay idle)",
                self._session_timeout_ms,
            )

    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` records, error events filtered out (and logged)."""
        msgs = self._client.consume(max_messages, timeout)
        if self._subscribed_at is not None:
            self._say_what_we_wait_for()
        if not msgs:
            return msgs
        good = [m for m in msgs if m.error() is None]
        if len(good) != len(msgs):
            for m in msgs:
                err = m.error()
                if err is None:
                    continue
                # A fatal error reaches the queue as code _FATAL, without the fatal flag.
                if err.fatal() or err.code() == KafkaError._FATAL:
                    self.fatal = KafkaClientError("the consumer hit a fatal error", err)
                refused = self._denied(err, "read", m.topic())
                if refused is not None:
                    self.fatal = self.fatal or refused
                    log.error("%s", refused)
                    continue
                level = 20 if err.code() in _TRANSIENT else 40
                log.log(
                    level,
                    "consume %s: %s",
                    where(m.topic(), m.partition(), m.offset()),
                    kafka_error_text(err),
                )
        return good

    @property
    def group_id(self) -> str:
        return str(self._conf.get("group.id"))

    def _denied(
        self, err: KafkaError, what: str, topic: str | None = None
    ) -> KafkaClientError | None:
        """An authorization failure as one line that names the principal and the resource."""
        if err.code() not in AUTHORIZATION:
            return None
        if err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED or not topic:
            group = f"'{self.group_id}'"
            line = denied(err.name(), self._conf, f"{what} consumer group", group, "READ on it")
        else:
            line = denied(
                err.name(),
                self._conf,
                what,
                f"topic '{topic}' (topics.inputs)",
                "READ and DESCRIBE on it",
            )
        return KafkaClientError(line)

    def pause(self) -> None:
        if not self.paused:
            self._client.pause(self._client.assignment())
            self.paused = True

    def resume(self) -> None:
        if self.paused:
            self._client.resume(self._client.assignment())
            self.paused = False

    def commit(self, offsets: dict[TP, int], sync: bool = False) -> None:
        """Commit explicit positions (the offset of the next record to read)."""
        if not offsets:
            return
        tps = [TopicPartition(t, p, off) for (t, p), off in offsets.items()]
        try:
            if sync:
                result = self._client.commit(offsets=tps, asynchronous=False)
            else:
                self._client.commit(offsets=tps, asynchronous=True)
                return
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError._NO_OFFSET:
                return
            raise self._denied(err, "commit offsets for") or CommitError(
                "offset commit failed", err
            ) from None
        if result:
            failed = [p for p in result if p.error is not None]
            if failed:
                raise CommitError(
                    f"offset commit failed for {failed[0].topic}[{failed[0].partition}]",
                    failed[0].error,
                )

    def group_metadata(self) -> Any:
        """What a transaction's offsets are sent with, so the group can fence zombies (KIP-447)."""
        return self._client.consumer_group_metadata()

    def rewind(self, tp: TP, offset: int) -> None:
        """Read ``tp`` again from ``offset`` (an aborted transaction's work).

        A seek drops what librdkafka prefetched for the partition. Where the
        partition is not fetching yet, a seek is refused; re-assigning it at
        the offset does the same job.
        """
        target = TopicPartition(tp[0], tp[1], offset)
        try:
            self._client.seek(target)
        except KafkaException as exc:
            log.info("seek %s refused (%s); re-assigning it there", where(*tp, offset), exc)
            self._client.incremental_unassign([TopicPartition(tp[0], tp[1])])
            self._client.incremental_assign([target])
            if self.paused:
                self._client.pause([TopicPartition(tp[0], tp[1])])

    def close(self) -> None:
        """Leave the group (the final revoke runs the revoke hook first)."""
        self._client.close()


def check_topics(
    admin_conf: dict[str, Any], topics: dict[str, list[str]], timeout: float = WORKER_TIMEOUT_S
) -> dict[str, int]:
    """Wait for the cluster (at most ``timeout`` s), then insist every configured topic exists.

    Returns partitions per input topic. A missing topic is a start-up error
    that names it and the config key, never an auto-created surprise.
    """
    meta = probe_cluster(admin_conf, timeout, say_waiting=True)
    problem = topic_acl_problem(admin_conf, topics)
    if problem is not None:
        raise KafkaClientError(problem)
    missing = [
        (key, name)
        for key, names in topics.items()
        for name in names
        if meta.topics.get(name) is None or meta.topics[name].error is not None
    ]
    if missing:
        listed = ", ".join(f"{key} '{name}'" for key, name in missing)
        hint = missing_topic_hint([name for _, name in missing])
        raise StreamInferError(f"topic does not exist: {listed} ({hint})")
    return {name: len(meta.topics[name].partitions) for name in topics.get("topics.inputs", [])}


def topic_acl_problem(
    admin_conf: dict[str, Any], topics: dict[str, list[str]], timeout: float = 10.0
) -> str | None:
    """The first topic this principal may not use as configured, as one line; else None.

    ``topics`` maps a config key (``topics.inputs``, ``topics.output``, ...) to
    its topics: inputs need READ, the others WRITE, all DESCRIBE. Topics that do
    not exist are left to the caller.
    """
    every = [name for listed in topics.values() for name in listed]
    allowed = authorized_operations(admin_conf, every, timeout)
    for key, names in topics.items():
        need = "READ" if key == "topics.inputs" else "WRITE"
        verb = "read" if key == "topics.inputs" else "write to"
        grant = f"DESCRIBE and {need} on it"
        for name in names:
            ops, resource = allowed.get(name), f"topic '{name}' ({key})"
            if isinstance(ops, KafkaError) and ops.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                return denied(ops.name(), admin_conf, "describe", resource, grant)
            if isinstance(ops, set) and need not in ops:
                return denied(f"no {need} ACL", admin_conf, verb, resource, grant)
    return None
