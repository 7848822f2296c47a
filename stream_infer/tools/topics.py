"""Topic declarations (``topics/*.yaml``) and applying them to a cluster, idempotently.

``apply`` only ever moves a topic towards its declaration: it creates missing
topics, raises partition counts and sets declared configs. It never deletes a
topic, never shrinks one (Kafka cannot) and never touches undeclared configs,
so running it twice, or against a cluster others also manage, is safe.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stream_infer.errors import TopicError, kafka_error_text

__all__ = ["Change", "TopicDecl", "apply_topics", "default_topics_dir", "load_declarations"]


class TopicDecl(BaseModel):
    """One declared topic."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=249, pattern=r"^[a-zA-Z0-9._-]+$")
    partitions: int = Field(ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=32)
    config: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("config")
    @classmethod
    def _as_strings(cls, v: dict[str, Any]) -> dict[str, Any]:
        return {k: _config_text(val) for k, val in v.items()}


def _config_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Change:
    topic: str
    action: str  # created | partitions | config | unchanged | warning
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.topic}: {self.action}" + (f" ({self.detail})" if self.detail else "")


def default_topics_dir() -> Path:
    """``topics/`` of the current directory, else the declarations shipped with the package."""
    local = Path("topics")
    if local.is_dir():
        return local
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "topics", package / "_topics"):
        if candidate.is_dir():
            return candidate
    return local


def load_declarations(directory: str | Path) -> list[TopicDecl]:
    """Read every ``*.yaml``/``*.yml`` file: each holds one topic mapping or a list of them."""
    root = Path(directory)
    if not root.is_dir():
        raise TopicError(f"topic declarations folder not found: {root}")
    decls: dict[str, tuple[TopicDecl, Path]] = {}
    for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise TopicError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        items = data if isinstance(data, list) else [data]
        for pos, item in enumerate(items):
            label = f"{path}" + (f"[{pos}]" if isinstance(data, list) else "")
            if not isinstance(item, dict):
                raise TopicError(
                    f"{label}: a topic declaration must be a mapping with name and partitions"
                )
            try:
                decl = TopicDecl(**item)
            except ValidationError as exc:
                first = exc.errors()[0]
                key = ".".join(str(p) for p in first["loc"])
                what = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
                raise TopicError(f"{label}: {key}: {what}") from None
            if decl.name in decls:
                raise TopicError(
                    f"topic '{decl.name}' is declared twice: {decls[decl.name][1]} and {path}"
                )
            decls[decl.name] = (decl, path)
    return [d for d, _ in decls.values()]


def _results(futures: dict[Any, Any]) -> dict[str, BaseException]:
    """Wait for admin futures; failures by topic name."""
    errors: dict[str, BaseException] = {}
    for key, fut in futures.items():
        try:
            fut.result()
        except Exception as exc:
            errors[getattr(key, "name", key)] = exc
    return errors


def _why(exc: BaseException) -> str:
    return kafka_error_text(exc.args[0]) if exc.args else str(exc)


def _code(exc: BaseException) -> Any:
    err = exc.args[0] if exc.args else None
    return err.code() if err is not None and hasattr(err, "code") else None


class _Applier:
    """The three moves towards a declaration: create, grow, configure."""

    def __init__(self, admin_conf: dict[str, Any], timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        from stream_infer.logging import get_logger

        conf = dict(admin_conf)
        conf.setdefault("logger", get_logger("librdkafka"))
        self.admin = AdminClient(conf)
        self.servers = conf.get("bootstrap.servers")
        self.timeout = timeout
        self.changes: list[Change] = []

    def topics(self) -> dict[str, Any]:
        from confluent_kafka import KafkaException

        try:
            meta = self.admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise TopicError(f"cannot reach Kafka at {self.servers}: {_why(exc)}") from None
        return {name: t for name, t in meta.topics.items() if t.error is None}

    def create(self, decls: list[TopicDecl]) -> None:
        from confluent_kafka import KafkaError
        from confluent_kafka.admin import NewTopic

        new = [
            NewTopic(d.name, d.partitions, d.replication_factor, config=dict(d.config))  # type: ignore[arg-type]
            for d in decls
        ]
        t = self.timeout
        failed = _results(self.admin.create_topics(new, operation_timeout=t, request_timeout=t))
        for d in decls:
            exc = failed.get(d.name)
            if exc is None:
                detail = f"{d.partitions} partitions, replication factor {d.replication_factor}"
                self.changes.append(Change(d.name, "created", detail))
            elif _code(exc) != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a race: fine
                raise TopicError(f"creating topic '{d.name}' failed: {_why(exc)}")
        self._await_leaders([d.name for d in decls])

    def _await_leaders(self, names: list[str]) -> None:
        """Return once every partition of ``names`` has a leader, or the timeout passed.

        CreateTopics answers before the metadata is everywhere: a client started right
        after (a worker's topic check, a producer) could still be told the topic does not
        exist. Past the timeout the caller goes on, and whoever uses the topic reports it.
        """
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            meta = self.topics()
            if all(
                n in meta
                and meta[n].partitions
                and all(p.leader >= 0 for p in meta[n].partitions.values())
                for n in names
            ):
                return
            time.sleep(0.05)

    def grow(self, decls: list[TopicDecl], meta: dict[str, Any]) -> None:
        from confluent_kafka.admin import NewPartitions

        grow = []
        for d in decls:
            parts = meta[d.name].partitions
            if len(parts) < d.partitions:
                grow.append(d)
            elif len(parts) > d.partitions:
                why = f"has {len(parts)} partitions, declared {d.partitions}; Kafka cannot shrink"
                self.changes.append(Change(d.name, "warning", why))
            replicas = sorted({len(p.replicas) for p in parts.values()})
            if replicas and replicas != [d.replication_factor]:
                why = (
                    f"replication factor is {replicas}, declared {d.replication_factor}; "
                    "change it with a partition reassignment"
                )
                self.changes.append(Change(d.name, "warning", why))
        if not grow:
            return
        t = self.timeout
        futures = self.admin.create_partitions(
            [NewPartitions(d.name, d.partitions) for d in grow],
            operation_timeout=t,
            request_timeout=t,
        )
        failed = _results(futures)
        for d in grow:
            if d.name in failed:
                raise TopicError(f"adding partitions to '{d.name}' failed: {_why(failed[d.name])}")
            old = len(meta[d.name].partitions)
            self.changes.append(Change(d.name, "partitions", f"{old} -> {d.partitions}"))

    def configure(self, decls: list[TopicDecl]) -> None:
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

        decls = [d for d in decls if d.config]
        if not decls:
            return
        topic = ConfigResource.Type.TOPIC
        described = self.admin.describe_configs(
            [ConfigResource(topic, d.name) for d in decls], request_timeout=self.timeout
        )
        current: dict[str, dict[str, Any]] = {}
        for res, fut in described.items():
            try:
                current[res.name] = fut.result()
            except Exception as exc:
                raise TopicError(
                    f"reading the config of '{res.name}' failed: {_why(exc)}"
                ) from None
        updates = []
        for d in decls:
            entries = current.get(d.name, {})
            diff = {
                k: str(v) for k, v in d.config.items() if k not in entries or entries[k].value != v
            }
            if diff:
                ops = [
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                    for k, v in diff.items()
                ]
                updates.append((d, diff, ConfigResource(topic, d.name, incremental_configs=ops)))
        if not updates:
            return
        futures = self.admin.incremental_alter_configs(
            [r for _, _, r in updates], request_timeout=self.timeout
        )
        failed = _results(futures)
        for d, diff, _ in updates:
            if d.name in failed:
                why = _why(failed[d.name])
                raise TopicError(f"updating the config of '{d.name}' failed: {why}")
            shown = ", ".join(f"{k}={v}" for k, v in diff.items())
            self.changes.append(Change(d.name, "config", shown))


def apply_topics(
    admin_conf: dict[str, Any], decls: Iterable[TopicDecl], timeout: float = 30.0
) -> list[Change]:
    """Bring the cluster in line with the declarations; returns what was (or was not) done."""
    decls = list(decls)
    applier = _Applier(admin_conf, timeout)
    meta = applier.topics()
    missing = [d for d in decls if d.name not in meta]
    if missing:
        applier.create(missing)
    existing = [d for d in decls if d.name in meta]
    if existing:
        applier.grow(existing, meta)
        applier.configure(existing)
    touched = {c.topic for c in applier.changes if c.action != "warning"}
    unchanged = [Change(d.name, "unchanged") for d in decls if d.name not in touched]
    return applier.changes + unchanged
