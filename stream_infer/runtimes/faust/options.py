"""The configuration file, rendered for Faust: app settings, client properties, the app itself.

The same file drives both runtimes, so the ``kafka.*`` librdkafka properties are
translated into Faust's (aiokafka's) settings here. Only properties with a
faithful translation are taken; any other one stops the start-up with a line
that names it, instead of being silently ignored under this runtime.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.threads import WorkerThread

from stream_infer.config import Settings
from stream_infer.errors import ConfigError
from stream_infer.secrets import reveal

__all__ = ["app_settings", "broker_urls", "make_app"]

# The room a dead letter of the largest default input needs (as the native producer's
# message.max.bytes); the topic's max.message.bytes remains the real limit.
_MAX_REQUEST_BYTES = 4 * 1024 * 1024


def _ms(value: Any) -> float:
    return float(value) / 1000.0


def _offset_reset(value: Any) -> str:
    text = str(value).lower()
    mapped = {"smallest": "earliest", "beginning": "earliest", "largest": "latest", "end": "latest"}
    text = mapped.get(text, text)
    if text not in ("earliest", "latest"):
        raise ValueError("takes earliest or latest")
    return text


def _isolation(value: Any) -> str:
    text = str(value).lower()
    if text not in ("read_committed", "read_uncommitted"):
        raise ValueError("takes read_committed or read_uncommitted")
    return text


def _acks(value: Any) -> int:
    text = str(value).lower()
    if text in ("all", "-1"):
        return -1
    if text in ("0", "1"):
        return int(text)
    raise ValueError("takes all, -1, 0 or 1")


def _classic_only(value: Any) -> None:
    if str(value).lower() != "classic":
        raise ValueError("aiokafka speaks the classic group protocol only (KIP-848 is not there)")


def _compression(value: Any) -> str | None:
    text = str(value).lower()
    if text not in ("none", "gzip", "snappy", "lz4", "zstd"):
        raise ValueError("takes none, gzip, snappy, lz4 or zstd")
    return None if text == "none" else text


def _positive(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


# librdkafka property -> (Faust setting, conversion); a None setting is checked, not passed.
_Translation = tuple[str | None, Callable[[Any], Any]]
_CONSUMER: dict[str, _Translation] = {
    "session.timeout.ms": ("broker_session_timeout", _ms),
    "heartbeat.interval.ms": ("broker_heartbeat_interval", _ms),
    "max.poll.interval.ms": ("broker_max_poll_interval", _ms),
    "auto.offset.reset": ("consumer_auto_offset_reset", _offset_reset),
    "isolation.level": ("isolation_level", _isolation),  # ours: see _ReadCommittedThread
    "max.partition.fetch.bytes": ("consumer_max_fetch_size", _positive),
    "metadata.max.age.ms": ("consumer_metadata_max_age_ms", _positive),
    "group.protocol": (None, _classic_only),
}
_PRODUCER: dict[str, _Translation] = {
    "linger.ms": ("producer_linger", _ms),
    "acks": ("producer_acks", _acks),
    "compression.type": ("producer_compression_type", _compression),
    "batch.size": ("producer_max_batch_size", _positive),
    "message.max.bytes": ("producer_max_request_size", _positive),
    "request.timeout.ms": ("producer_request_timeout", _ms),
}
_SECURITY = {
    "security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password",
    "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
}  # fmt: skip
_SASL = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}


def broker_urls(bootstrap_servers: str) -> list[str]:
    """``a:9092,b:9092`` as the URL list Faust wants."""
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    return [f"kafka://{host}" for host in hosts]


def _credentials(common: dict[str, Any]) -> Any:
    """Faust credentials for the security properties of ``kafka.common`` (None: plaintext)."""
    protocol = str(common.get("security.protocol", "PLAINTEXT")).upper()
    if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigError(
            f"kafka.common.security.protocol: '{protocol}' is not supported by the Faust runtime "
            "(PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
        )
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=common.get("ssl.ca.location"))
        cert = common.get("ssl.certificate.location")
        if cert:
            context.load_cert_chain(
                cert, common.get("ssl.key.location"), common.get("ssl.key.password")
            )
    if not protocol.startswith("SASL"):
        return faust.SSLCredentials(context) if context is not None else None
    mechanism = str(common.get("sasl.mechanism", common.get("sasl.mechanisms", "PLAIN"))).upper()
    if mechanism not in _SASL:
        raise ConfigError(
            f"kafka.common.sasl.mechanism: '{mechanism}' is not supported by the Faust runtime "
            f"({', '.join(sorted(_SASL))})"
        )
    return faust.SASLCredentials(
        username=common.get("sasl.username"),
        password=common.get("sasl.password"),
        ssl_context=context,
        mechanism=mechanism,
    )


def _translate(
    section: str, props: dict[str, Any], table: dict[str, _Translation]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in props.items():
        if key not in table:
            known = ", ".join(sorted(table))
            raise ConfigError(
                f"kafka.{section}.{key}: not supported by the Faust runtime (it takes {known}; "
                "other librdkafka properties only apply to --runtime native)"
            )
        setting, convert = table[key]
        try:
            converted = convert(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"kafka.{section}.{key}: {exc} (got {value!r})") from None
        if setting is not None:
            out[setting] = converted
    return out


def app_settings(settings: Settings, data_dir: Path) -> dict[str, Any]:
    """Keyword arguments for ``faust.App``: the worker's group, broker, batching and guarantee.

    The app id is ``kafka.group_id``, so Faust's consumer group is the group
    ``stream-infer lag`` and the lag gauges read. Leader topic and web server
    are off unless asked for: this app has no tables and serves its endpoints
    on ``metrics.port``.
    """
    s, f = settings, settings.faust
    common = reveal(s.kafka.security_props())  # kafka.common plus kafka.secrets
    extra_common = sorted(set(common) - _SECURITY - {"client.id"})
    if extra_common:
        raise ConfigError(
            f"kafka.common.{extra_common[0]}: not supported by the Faust runtime (it takes "
            f"{', '.join(sorted(_SECURITY | {'client.id'}))})"
        )
    if s.processing.exactly_once:
        raise ConfigError(
            "processing.guarantee: exactly_once is not available with --runtime faust (Faust's "
            "transactions let duplicates and losses through the exactly-once fault tests; see "
            "the README, 'Runtimes: native or Faust'): use --runtime native for exactly once"
        )
    if f.web_port is not None and f.web_port == s.metrics.port:
        raise ConfigError(
            f"faust.web_port: {f.web_port} is metrics.port too; give Faust's web server a port "
            "of its own, or null to keep it off"
        )
    options: dict[str, Any] = {
        "id": s.kafka.group_id,
        "broker": broker_urls(s.kafka.bootstrap_servers),
        "broker_client_id": str(common.get("client.id", f"stream-infer-{s.processing.worker_id}")),
        "broker_credentials": _credentials(common),
        "datadir": str(data_dir),
        "processing_guarantee": "at_least_once",
        "broker_commit_interval": max(s.processing.commit_every_s, 0.01),
        "consumer_auto_offset_reset": "earliest",
        "consumer_group_instance_id": s.processing.static_id,
        "producer_acks": -1,
        "producer_linger": 0.005,
        "producer_max_request_size": _MAX_REQUEST_BYTES,
        "topic_partitions": f.topic_partitions,
        "topic_replication_factor": f.replication_factor,
        "topic_disable_leader": True,
        "stream_buffer_maxsize": f.stream_buffer_maxsize,
        "web_enabled": f.web_port is not None,
        "web_port": f.web_port or 6066,
        "web_host": f.web_host,
        "web_bind": f.web_host,
        # The deadline of a graceful stop is ours (processing.shutdown_timeout_s).
        "stream_wait_empty": True,
        "isolation_level": "read_committed",
    }
    options.update(_translate("consumer", reveal(s.kafka.consumer), _CONSUMER))
    options.update(_translate("producer", reveal(s.kafka.producer), _PRODUCER))
    # Faust refuses a session timeout above its request timeout (90 s by default).
    options["broker_request_timeout"] = max(90.0, options.get("broker_session_timeout", 0) + 5.0)
    return options


class _DaemonThread(WorkerThread):
    """The consumer's thread, as a daemon: an aiokafka client that cannot reach the broker
    to leave its group must not hold the process past its shutdown deadline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


class _ReadCommittedThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust reads ``read_uncommitted`` unless it runs exactly once; we read committed data.

    A transactional producer upstream (``dlq replay`` is one) must never get an
    event of an aborted transaction predicted, whichever runtime runs.
    """

    isolation_level = "read_committed"
    logger = logging.getLogger("faust.transport")
    Worker = _DaemonThread

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = self.isolation_level  # read by AIOKafkaConsumer.start()
        return consumer


def make_app(settings: Settings, data_dir: Path | None = None) -> faust.App:
    """A ``faust.App`` for ``settings`` (its data in ``data_dir``, or a fresh temporary folder)."""
    folder = Path(
        data_dir or settings.faust.data_dir or tempfile.mkdtemp(prefix="stream-infer-faust-")
    )
    options = app_settings(settings, folder)
    isolation = options.pop("isolation_level")

    class Thread(_ReadCommittedThread):
        isolation_level = isolation

    class Consumer(faust_aiokafka.Consumer):
        logger = logging.getLogger("faust.transport")

        def _new_consumer_thread(self) -> Any:
            return Thread(self, loop=self.loop, beacon=self.beacon)

        async def on_partitions_revoked(self, revoked: Any) -> None:
            # Faust forgets the acknowledged offsets of revoked partitions before it
            # commits on a revoke: what was acknowledged since the last periodic commit
            # would be redone by the next owner (measured: duplicates after clean
            # rebalances). Commit it first.
            await self._commit_acknowledged()
            await super().on_partitions_revoked(revoked)

        async def commit_and_end_transactions(self) -> None:
            await self._commit_acknowledged()  # the final commit of a stop or a revoke

        async def _commit_acknowledged(self) -> None:
            # A commit already under way makes commit() wait for it and return without
            # committing what was acknowledged meanwhile: the second call commits that.
            await self.commit(start_new_transaction=False)
            await self.commit(start_new_transaction=False)

    class Transport(faust_aiokafka.Transport):
        logger = logging.getLogger("faust.transport")

    Transport.Consumer = Consumer

    class App(faust.App):
        logger = logging.getLogger("faust.app")

        def _new_transport(self) -> Any:
            return Transport(self.conf.broker_consumer, self)

    app: faust.App = App(autodiscover=False, **options)
    return app
