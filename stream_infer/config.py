"""Settings: one YAML file, overridden key by key by ``STREAM_INFER_<SECTION>__<KEY>``.

Every section forbids unknown keys, so a typo (``bootstrap_server``) is a
start-up error that names the key instead of a silently ignored setting. The
sections render themselves into librdkafka dictionaries, so the rest of the
code never assembles client configuration by hand.

It is one long module on purpose: it is SPEC.md's configuration contract, every
section and its checks in the order of the spec, and the loader whose error
lines name the file or variable a bad value came from. Split, a reader would
have to assemble the contract from several files.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from stream_infer.errors import ConfigError
from stream_infer.secrets import is_secret_key, read_secret_file, reveal, seal

__all__ = [
    "BatchingSettings",
    "CanarySettings",
    "DlqSettings",
    "DriftSettings",
    "FaustSettings",
    "HealthSettings",
    "KafkaSettings",
    "LoggingSettings",
    "MetricsSettings",
    "ModelSettings",
    "ProcessingSettings",
    "ScalingSettings",
    "Settings",
    "ShadowSettings",
    "TopicsSettings",
    "cache_root",
    "load_settings",
]

ENV_PREFIX = "STREAM_INFER_"
CONFIG_ENV = "STREAM_INFER_CONFIG"  # the config file, when no path is given
# Secret values (see secrets.py) are held as SecretStr and revealed only in the client dicts.
ClientProps = dict[str, str | int | float | bool | SecretStr]

# Properties stream-infer owns: letting a file override them would silently
# void a guarantee (auto-commit commits before the prediction is acknowledged).
_RESERVED_COMMON = {"bootstrap.servers"}
_RESERVED_CONSUMER = {
    "group.id",
    "group.instance.id",  # from processing.worker_id, when set
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    # Rebalances are handled incrementally (cooperative-sticky, or KIP-848's
    # group.protocol=consumer); an eager assignor would break that.
    "partition.assignment.strategy",
}
# delivery.report.only.error: acknowledgements are what commits wait for at least once.
_RESERVED_PRODUCER = {"transactional.id", "enable.idempotence", "delivery.report.only.error"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _check_props(section: str, props: ClientProps, reserved: set[str]) -> ClientProps:
    for key in props:
        if key in reserved:
            raise ValueError(f"'{key}' is managed by stream-infer and cannot be set in {section}")
    return seal(props)


class KafkaSettings(_Section):
    """Where the cluster is and how to talk to it; extra librdkafka properties pass through."""

    bootstrap_servers: str = Field("localhost:9092", min_length=1)
    group_id: str = Field("stream-infer", min_length=1)
    consumer: ClientProps = Field(default_factory=dict)
    producer: ClientProps = Field(default_factory=dict)
    common: ClientProps = Field(default_factory=dict)
    # librdkafka property -> file holding its value (a mounted Kubernetes Secret), for both
    # clients. Read once at start-up; every value read is a secret.
    secrets: dict[str, str] = Field(default_factory=dict)
    _secret_values: dict[str, SecretStr] = PrivateAttr(default_factory=dict)

    @field_validator("common")
    @classmethod
    def _common(cls, v: ClientProps) -> ClientProps:
        return _check_props("kafka.common", v, _RESERVED_COMMON)

    @field_validator("consumer")
    @classmethod
    def _consumer(cls, v: ClientProps) -> ClientProps:
        return _check_props("kafka.consumer", v, _RESERVED_CONSUMER | _RESERVED_COMMON)

    @field_validator("producer")
    @classmethod
    def _producer(cls, v: ClientProps) -> ClientProps:
        return _check_props("kafka.producer", v, _RESERVED_PRODUCER | _RESERVED_COMMON)

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: dict[str, str]) -> dict[str, str]:
        for key, path in v.items():
            if key in _RESERVED_COMMON:
                raise ValueError(f"'{key}' is managed by stream-infer and cannot be a secret")
            if not path:
                raise ValueError(f"no file named for {key}")
        return v

    @model_validator(mode="after")
    def _read_secrets(self) -> KafkaSettings:
        both = sorted(set(self.secrets) & set(self.common))
        if both:
            raise ValueError(f"{', '.join(both)} set in both kafka.common and kafka.secrets")
        self._secret_values = {k: read_secret_file(k, p) for k, p in self.secrets.items()}
        from stream_infer.kafka.security import check_security  # local: keeps config light

        check_security(self.security_props())
        return self

    def security_props(self) -> dict[str, Any]:
        """``kafka.common`` plus the values read from ``kafka.secrets`` (still sealed)."""
        return {**self.common, **self._secret_values}

    def base(self) -> dict[str, Any]:
        """Properties every client gets: servers plus the shared security settings."""
        return {"bootstrap.servers": self.bootstrap_servers, **reveal(self.security_props())}

    def producer_props(self) -> dict[str, Any]:
        """``kafka.producer`` as librdkafka takes it, for tools that build their own producer."""
        return reveal(self.producer)

    def consumer_config(self, client_id: str, instance_id: str | None = None) -> dict[str, Any]:
        """The worker's consumer: manual commits, cooperative rebalancing.

        Offsets are committed by the worker itself, and only for work whose
        outputs the broker acknowledged, so librdkafka must never commit or
        store on its own. With ``instance_id`` the member is static (KIP-345):
        a restart under the same id takes its partitions back without a
        rebalance instead of waiting for the session to time out.

        Fetches keep librdkafka's defaults (the broker answers as soon as one
        record is there). Asking it to hold a fetch for 256 KiB or half the
        batch wait gave 8% more catch-up on the small model, but 3 to 5 ms more
        median latency, a worse p99, and on a model-bound worker an empty fetch
        every few milliseconds that cost the broker a tenth of a core (README,
        Performance).
        """
        conf: dict[str, Any] = {
            **self.base(),
            "group.id": self.group_id,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
        if instance_id is not None:
            conf["group.instance.id"] = instance_id
        if str(self.consumer.get("group.protocol", "classic")).lower() == "classic":
            # KIP-848's 'consumer' protocol assigns on the broker and rejects this key.
            conf["partition.assignment.strategy"] = "cooperative-sticky"
        conf.update(reveal(self.consumer))
        return conf

    def producer_config(
        self, client_id: str, transactional_id: str | None = None
    ) -> dict[str, Any]:
        """An idempotent producer: retries never duplicate or reorder within a session.

        With ``transactional_id`` it is the exactly-once producer: only failed
        deliveries are reported (a committed transaction acknowledges every
        record in it at once), and a transaction left open by a crashed worker
        blocks ``read_committed`` readers of its partitions for at most
        ``transaction.timeout.ms`` (10 s here, librdkafka's default is 60 s).
        """
        conf: dict[str, Any] = {
            **self.base(),
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            # Room for a dead letter of the largest input Kafka accepts by default
            # (1 MiB plus headers); the topic's max.message.bytes is the real gate.
            "message.max.bytes": 4 * 1024 * 1024,
        }
        if transactional_id is not None:
            conf["transactional.id"] = transactional_id
            conf["transaction.timeout.ms"] = 10_000
            conf["delivery.report.only.error"] = True
        conf.update(reveal(self.producer))
        return conf

    def admin_config(self) -> dict[str, Any]:
        return self.base()


class TopicsSettings(_Section):
    """Which topics the worker reads and writes."""

    inputs: list[str] = Field(default_factory=lambda: ["events"], min_length=1)
    output: str = Field("predictions", min_length=1)
    dead_letter: str = Field("events.dlq", min_length=1)

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: list[str]) -> list[str]:
        if any(not name for name in v):
            raise ValueError("topic names must not be empty")
        if len(set(v)) != len(v):
            raise ValueError("input topics are listed twice")
        return v

    @model_validator(mode="after")
    def _no_loops(self) -> TopicsSettings:
        # Reading what we write would feed predictions back in as events, forever.
        for name, label in ((self.output, "output"), (self.dead_letter, "dead_letter")):
            if name in self.inputs:
                raise ValueError(f"topics.{label} '{name}' is also an input topic")
        if self.output == self.dead_letter:
            raise ValueError("topics.output and topics.dead_letter must differ")
        return self


class ShadowSettings(_Section):
    """A second model run on the same batches, its answers written to their own topic only."""

    model_config = ConfigDict(extra="forbid", validate_default=True, coerce_numbers_to_str=True)

    path: str = Field(min_length=1)
    name: str | None = Field(None, min_length=1, description="null: model.name")
    version: str | None = Field(None, min_length=1, description="null: the file's, else 'shadow'")
    topic: str = Field(min_length=1)
    # A shadow that falls behind drops whole batches (counted) rather than slow the primary.
    max_queued_batches: int = Field(4, ge=1, le=1024)
    window_s: float = Field(300.0, gt=0, le=86_400, description="agreement gauges window")


class CanarySettings(_Section):
    """A candidate model answering a stable share of keys in place of the primary."""

    model_config = ConfigDict(extra="forbid", validate_default=True, coerce_numbers_to_str=True)

    path: str = Field(min_length=1)
    name: str | None = Field(None, min_length=1, description="null: model.name")
    version: str | None = Field(None, min_length=1, description="null: the file's, else 'canary'")
    share: float = Field(description="share of keys routed to the canary, in (0, 1]")

    @field_validator("share")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError("must be in (0, 1]: the share of keys the canary answers")
        return v


class ModelSettings(_Section):
    """The ONNX model and where it runs."""

    model_config = ConfigDict(extra="forbid", validate_default=True, coerce_numbers_to_str=True)

    path: str = Field("models/demo.onnx", min_length=1)
    name: str = Field("demo", min_length=1)
    version: str = Field("1", min_length=1)
    device: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    intra_op_threads: int = Field(
        0, ge=0, description="0 = one per usable core, less one per extra lane"
    )
    # onnxruntime's pool threads spin between calls by default; that costs the pipeline's
    # other threads their CPU. Spinning pays only for a model that runs back to back.
    spin: bool = Field(False, description="let onnxruntime's idle threads spin")
    # Batches in the model at once (runtimes/pipeline.py); unless intra_op_threads says
    # otherwise the session's pool gets cores - N + 1 threads, which the N calls share.
    # auto: 2 on the CPU with two or more cores; 1 on a GPU and with IO binding, whose
    # buffers are per bucket, not per call.
    concurrent_batches: Literal["auto"] | int = Field("auto", description="model calls at once")
    warmup: bool = True
    # GPU path (inference/runners.py). "auto": on for CUDA and TensorRT, off on a CPU.
    batch_buckets: Literal["auto", "off"] | list[int] = Field(
        "auto", description="pad batches to these sizes (auto: powers of two on a GPU)"
    )
    io_binding: Literal["auto", "on", "off"] = "auto"
    cuda_graphs: bool = Field(False, description="capture and replay CUDA graphs (CUDA only)")
    # Hot reload: model.path is looked at this often (0 = never); a replaced file is loaded,
    # warmed up and checked off the hot path, then served from the next batch on.
    reload_interval_s: float = Field(2.0, ge=0, le=3600)
    # same: a reloaded model must keep the output names (in order); any: outputs may change.
    reload_outputs: Literal["same", "any"] = "same"
    shadow: ShadowSettings | None = None
    canary: CanarySettings | None = None

    @field_validator("batch_buckets")
    @classmethod
    def _buckets(cls, v: Any) -> Any:
        if isinstance(v, list) and (not v or any(b < 1 for b in v)):
            raise ValueError("must be 'auto', 'off' or a list of batch sizes >= 1")
        return v

    @field_validator("concurrent_batches")
    @classmethod
    def _lanes(cls, v: Any) -> Any:
        if v != "auto" and not 1 <= v <= 64:
            raise ValueError("must be 'auto' or a number of batches from 1 to 64")
        return v

    @model_validator(mode="after")
    def _graphs_need_binding(self) -> ModelSettings:
        if self.cuda_graphs and (self.io_binding == "off" or self.batch_buckets == "off"):
            raise ValueError("cuda_graphs needs io_binding and batch_buckets (fixed buffers)")
        return self


class BatchingSettings(_Section):
    """When a micro-batch closes: at ``max_batch_size`` rows or ``max_wait_ms``."""

    max_batch_size: int = Field(512, ge=1, le=100_000)
    max_wait_ms: int = Field(10, ge=0, le=60_000)
    # None: batches of up to max_batch_size. Set, the batch size adapts: the largest
    # batch whose model call is expected to take at most this long (measured as the
    # worker runs), so a heavy model keeps its latency while a light one batches fully.
    latency_target_ms: float | None = Field(None, gt=0, le=600_000)


class ProcessingSettings(_Section):
    """Delivery guarantee and the knobs that bound memory and shutdown time."""

    guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # Two bounds, because pausing is not free (librdkafka drops its prefetch and
    # fetches again on resume): acknowledgements are pipelined by nature and get a
    # generous bound, the model's queue a tight one (reading far ahead of a slow
    # model only adds latency). Measured on the demo model, 2 cores: a bound of 4
    # unacknowledged batches paused 14 times per 50k events and ran at 6.2k/s;
    # unbounded it peaked at 14 batches and ran at 44.7k/s.
    max_in_flight_batches: int = Field(
        64, ge=1, le=4096, description="batches consumed but not yet acknowledged"
    )
    max_queued_batches: int = Field(
        2, ge=1, le=1024, description="decoded batches waiting for the model"
    )
    # None: 1000 ms at least once (a periodic asynchronous commit), 100 ms exactly once
    # (the length of a transaction: outputs become visible to read_committed readers at
    # its end, so it is also the latency floor). 0: commit after every batch.
    commit_interval_ms: int | None = Field(None, ge=0, le=600_000)
    shutdown_timeout_s: float = Field(25.0, gt=0, le=600)
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", min_length=1
    )

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == "exactly_once"

    @property
    def commit_every_s(self) -> float:
        """How often offsets are committed (at least once) or a transaction ends (exactly once)."""
        if self.commit_interval_ms is not None:
            return self.commit_interval_ms / 1000.0
        return 0.1 if self.exactly_once else 1.0

    @property
    def static_id(self) -> str | None:
        """The worker id when it was set on purpose: the consumer's ``group.instance.id``.

        Only an id someone chose is stable across restarts; the default changes
        with every pid, and a static member under a throwaway id would hold its
        partitions for a whole session timeout after every crash.
        """
        return self.worker_id if "worker_id" in self.model_fields_set else None


class MetricsSettings(_Section):
    """The HTTP endpoints (``/metrics``, ``/healthz``, ``/readyz``) and how fresh the lag is."""

    port: int = Field(8000, ge=0, le=65535, description="0 = any free port (logged)")
    address: str = Field("0.0.0.0", min_length=1, description="interface to bind")
    # SPEC: the lag of every input partition is refreshed at least every 5 s.
    lag_interval_s: float = Field(2.0, gt=0, le=5)


class HealthSettings(_Section):
    """When ``/healthz`` says the worker is stuck, so that an orchestrator restarts it.

    Each limit is about a wait that a restart can end: a loop that stopped
    turning, a single inference call that never returns, or outputs that the
    broker does not acknowledge although it answers metadata requests (the
    librdkafka leaderless-partition stall the README describes). A broker that
    is down is not the worker's fault; it does not make the worker unhealthy.
    """

    loop_timeout_s: float = Field(60.0, gt=0, le=3600)
    inference_timeout_s: float = Field(300.0, gt=0, le=86_400)
    ack_timeout_s: float = Field(120.0, gt=0, le=86_400)


class ScalingSettings(_Section):
    """Inputs to ``stream_infer_desired_replicas`` (see the README for the formula)."""

    drain_target_s: float = Field(300.0, gt=0, le=86_400, description="drain the lag within")
    target_utilization: float = Field(0.8, gt=0, le=1, description="headroom per replica")
    rate_window_s: float = Field(60.0, ge=5, le=3600, description="input rate averaged over")


class DriftSettings(_Section):
    """Drift monitoring against a baseline written by ``stream-infer drift baseline``."""

    baseline: str = Field("", description="baseline file; empty = drift monitoring off")
    # A day at most: the window is kept as 12 slots of counts, so a longer one
    # would only react more slowly, and a restart forgets it anyway.
    window_s: float = Field(60.0, gt=0, le=86_400, description="window the PSI is computed over")


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(False, alias="json")


class DlqSettings(_Section):
    """How ``stream-infer dlq replay`` tracks its progress and when it gives up on an event.

    Replay progress is the committed offset of its own consumer group on the
    dead-letter topic, written in the same transaction as the replayed events,
    so a replay killed at any point neither loses nor repeats work.
    """

    replay_group: str = Field("", description='empty: "<kafka.group_id>.dlq-replay"')
    max_replays: int = Field(3, ge=1, le=1000, description="replays before an event is parked")
    # One transaction per this many replayed records or this much time, whichever
    # comes first: small enough that a kill loses little work, well inside the
    # producer's transaction.timeout.ms (60 s by default).
    transaction_records: int = Field(500, ge=1, le=100_000)
    transaction_ms: int = Field(1000, ge=10, le=30_000)

    def group(self, worker_group: str) -> str:
        return self.replay_group or f"{worker_group}.dlq-replay"


class FaustSettings(_Section):
    """What only ``run --runtime faust`` reads: Faust's own folders, web server and topics.

    Faust creates its internal topics (leader, changelogs, repartitions) itself;
    these say how. Its web server stays off unless given a port: the SPEC's
    endpoints are served on ``metrics.port`` by either runtime.
    """

    data_dir: str = Field("", description="Faust's data folder; empty = a temporary one")
    web_port: int | None = Field(None, ge=1, le=65535, description="null = Faust's web off")
    web_host: str = Field("127.0.0.1", min_length=1)
    topic_partitions: int = Field(8, ge=1, le=10_000, description="for Faust's own topics")
    replication_factor: int = Field(1, ge=1, le=32, description="for Faust's own topics")
    stream_buffer_maxsize: int = Field(4096, ge=1, le=1_000_000)


class Settings(BaseSettings):
    """The whole configuration; see SPEC.md section 2 and the README."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)  # type: ignore[arg-type]
    topics: TopicsSettings = Field(default_factory=TopicsSettings)  # type: ignore[arg-type]
    model: ModelSettings = Field(default_factory=ModelSettings)  # type: ignore[arg-type]
    batching: BatchingSettings = Field(default_factory=BatchingSettings)  # type: ignore[arg-type]
    processing: ProcessingSettings = Field(default_factory=ProcessingSettings)  # type: ignore[arg-type]
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)  # type: ignore[arg-type]
    health: HealthSettings = Field(default_factory=HealthSettings)  # type: ignore[arg-type]
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)  # type: ignore[arg-type]
    drift: DriftSettings = Field(default_factory=DriftSettings)  # type: ignore[arg-type]
    logging: LoggingSettings = Field(default_factory=LoggingSettings)  # type: ignore[arg-type]
    dlq: DlqSettings = Field(default_factory=DlqSettings)  # type: ignore[arg-type]
    faust: FaustSettings = Field(default_factory=FaustSettings)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _shadow_topic(self) -> Settings:
        # The shadow's answers must never reach the readers of the real ones (or loop back in).
        shadow = self.model.shadow
        if shadow is not None:
            t = self.topics
            for name, label in (
                *((name, "an input topic") for name in t.inputs),
                (t.output, "topics.output"),
                (t.dead_letter, "topics.dead_letter"),
            ):
                if shadow.topic == name:
                    raise ValueError(f"model.shadow.topic '{name}' is also {label}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init data; environment variables win over it.
        return (env_settings, init_settings)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections, not {type(data).__name__}"
        )
    return data


def cache_root() -> Path:
    """Where downloaded and derived artefacts live (Kafka jars, TensorRT engines).

    Outside the repository and the image layers, so they survive a fresh clone;
    ``STREAM_INFER_CACHE_DIR`` moves it (a volume in a container).
    """
    explicit = os.environ.get("STREAM_INFER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stream-infer"


# Variables of the prefix that are not configuration: the tooling's own.
_TOOL_VARIABLES = {"CONFIG", "CACHE_DIR", "BROKER_HEAP"}


def _unknown_env_sections() -> list[str]:
    """``STREAM_INFER_*`` variables that name no section: typos that would be ignored."""
    known = {name.upper() for name in Settings.model_fields}
    bad = []
    for var in os.environ:
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        rest = upper[len(ENV_PREFIX) :]
        section = rest.split("__", 1)[0]
        if section in known or ("__" not in rest and rest in _TOOL_VARIABLES):
            continue
        bad.append(var)
    return sorted(bad)


def _env_origin(loc: tuple[Any, ...]) -> str:
    """`` [from STREAM_INFER_...]`` when an environment variable set this key (or a parent)."""
    names = {k.upper() for k in os.environ}
    for depth in range(len(loc), 0, -1):
        env_var = ENV_PREFIX + "__".join(str(p) for p in loc[:depth]).upper()
        if env_var in names:
            return f" [from {env_var}]"
    return ""


# The last location part pydantic adds for each branch of a client property's union type.
_UNION_BRANCHES = {"str", "int", "float", "bool"}


def _describe(err: dict[str, Any]) -> str:
    parts = tuple(err.get("loc", ()))
    msg = str(err.get("msg", "invalid"))
    if parts and (parts[-1] in _UNION_BRANCHES or "[" in str(parts[-1])):
        # One line per property, not one per branch of str | int | float | bool | SecretStr.
        parts, msg = parts[:-1], "must be a string, a number or a boolean"
        err = {**err, "loc": parts}
    loc = ".".join(str(part) for part in parts)
    msg = msg.removeprefix("Value error, ")
    origin = _env_origin(tuple(err.get("loc", ())))
    if err.get("type") == "extra_forbidden":
        return f"{loc}: unknown key{origin}"
    shown = err.get("input")
    secret = any(is_secret_key(str(part)) for part in err.get("loc", ()))
    hidden = secret or isinstance(shown, dict | list | SecretStr) or shown is None
    got = "" if hidden else f" (got {shown!r})"
    return f"{loc}: {msg}{got}{origin}" if loc else f"{msg}{got}"


def load_settings(path: str | Path | None = None) -> Settings:
    """Read the file (if any), apply environment overrides, validate everything.

    Without ``path``, the file named by ``STREAM_INFER_CONFIG`` is read, if set.

    Raises :class:`ConfigError` with one line that names every offending key,
    before any connection is attempted.
    """
    origin = ""
    if path is None and os.environ.get(CONFIG_ENV):
        # Containers name their file in the environment; an explicit path wins.
        path, origin = os.environ[CONFIG_ENV], f" (from {CONFIG_ENV})"
    try:
        data = _read_yaml(Path(path)) if path is not None else {}
    except ConfigError as exc:
        raise ConfigError(f"{exc}{origin}") from None
    unknown = _unknown_env_sections()
    if unknown:
        raise ConfigError(f"unknown configuration section in environment: {', '.join(unknown)}")
    try:
        return Settings(**data)
    except SettingsError as exc:
        # Raised for an override that is not valid JSON where a list or mapping is expected.
        field = str(exc).split('"')[1] if '"' in str(exc) else "?"
        raise ConfigError(
            f"invalid environment override for section '{field}': {ENV_PREFIX}{field.upper()}__* "
            "values for lists and mappings must be JSON"
        ) from None
    except ValidationError as exc:
        where = f" in {path}" if path is not None else ""
        described = [_describe(e) for e in exc.errors()]  # type: ignore[arg-type]
        details = "; ".join(dict.fromkeys(described))
        raise ConfigError(f"invalid configuration{where}: {details}") from None
