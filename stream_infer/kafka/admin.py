"""One way to ask "is the cluster there?": a muted probe that gives up on time, in one line.

Every command that talks to Kafka asks this first. librdkafka reports each failed
reconnect (every ~100 ms) through the client's log, and a blocked call delivers
them all at once afterwards; the probe keeps its client quiet, remembers the last
error its ``error_cb`` saw, and ends with one line that names the address and the
reason, within the time it was given (each attempt is cut to the time left).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, ClusterMetadata
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from stream_infer.errors import KafkaClientError, kafka_error_text
from stream_infer.kafka.security import authentication_failure
from stream_infer.logging import get_logger, normalise_librdkafka

__all__ = [
    "TOOL_TIMEOUT_S",
    "WORKER_TIMEOUT_S",
    "authorized_operations",
    "missing_topic_hint",
    "probe_cluster",
]

log = get_logger("kafka")

TOOL_TIMEOUT_S = 15.0  # lag, consume, produce, topics apply: a person is waiting
WORKER_TIMEOUT_S = 60.0  # a worker starting next to a broker that is still booting
# One metadata request each; librdkafka reconnects within it on its own. The first are short
# so that a worker says early that it waits.
_ATTEMPT_S = (2.0, 5.0, 10.0)

_muted = logging.getLogger("stream_infer.librdkafka.probe")
_muted.addHandler(logging.NullHandler())
_muted.propagate = False
# Errors that say less than the connection errors they follow.
_VAGUE = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT}


class _LastError:
    """``error_cb``: keeps the most telling recent error (a refused connect over 'all down').

    A failed login or TLS handshake is kept as ``denied``: waiting for it to pass
    would only turn a wrong password into a minute of "not answering yet".
    """

    def __init__(self, conf: dict[str, Any]) -> None:
        self.error: KafkaError | None = None
        self.denied: str | None = None
        self._conf = conf

    def __call__(self, err: KafkaError) -> None:
        if self.denied is None:
            self.denied = authentication_failure(err, self._conf, probe_tls=True)
        if self.error is None or err.code() not in _VAGUE or self.error.code() in _VAGUE:
            self.error = err

    def reason(self, fallback: KafkaError | None) -> str:
        err = self.error or fallback
        if err is None:
            return "no answer"
        text = kafka_error_text(err)
        # "host:port/bootstrap: Connect to ... failed: ... (after 0ms in state CONNECT)"
        text = text.split("/bootstrap: ", 1)[-1]
        return normalise_librdkafka(text)


def probe_cluster(
    conf: dict[str, Any], timeout: float, say_waiting: bool = False
) -> ClusterMetadata:
    """Cluster metadata, or one :class:`KafkaClientError` after ``timeout`` seconds at most.

    ``say_waiting`` logs one INFO line after the first failed attempt (a worker
    whose log would otherwise be silent for a minute); the tools stay quiet.
    """
    servers = conf.get("bootstrap.servers", "?")
    last = _LastError(conf)
    client_conf: dict[str, Any] = {**conf, "logger": _muted, "log_level": 0, "error_cb": last}
    admin = AdminClient(client_conf)
    deadline = time.monotonic() + timeout
    failure: list[KafkaError] = []  # the last attempt's own error, for want of a better one

    def wait(retry_state: Any) -> float:
        backoff = wait_exponential(multiplier=0.25, max=2.0)(retry_state)
        return float(max(0.0, min(backoff, deadline - time.monotonic())))

    def attempt(number: int) -> ClusterMetadata:
        left = deadline - time.monotonic()
        cap = _ATTEMPT_S[min(number, len(_ATTEMPT_S)) - 1]
        try:
            return admin.list_topics(timeout=max(0.1, min(cap, left)))
        except KafkaException as exc:
            admin.poll(0)  # serve error_cb: the reason lives there
            if last.denied is not None:
                raise KafkaClientError(last.denied) from None  # not retried: it will not pass
            if say_waiting and not failure:
                log.info("the Kafka cluster is not answering yet; trying for up to %.0fs", timeout)
            failure[:] = [exc.args[0]]
            raise

    try:
        for retry in Retrying(
            retry=retry_if_exception_type(KafkaException),
            wait=wait,
            stop=stop_after_delay(max(0.0, timeout - 0.05)),
            reraise=True,
        ):
            with retry:
                return attempt(retry.retry_state.attempt_number)
    except KafkaException:
        pass
    raise KafkaClientError(
        f"cannot reach Kafka at {servers} within {timeout:.0f}s: "
        f"{last.reason(failure[0] if failure else None)}"
    )


def missing_topic_hint(names: list[str]) -> str:
    """What to do about topics that do not exist: ``topics apply`` creates declared ones only.

    ``topics/<name>.yaml`` in the current folder is where ``topics apply`` looks
    first; when that file is already there, applying is all that is missing.
    """
    declared = [
        n for n in names if any(Path("topics", n + ext).is_file() for ext in (".yaml", ".yml"))
    ]
    if declared == names:
        files = ", ".join(f"topics/{n}.yaml" for n in names)
        return f"{files} declares it: run `stream-infer topics apply`"
    files = ", ".join(f"topics/{n}.yaml" for n in names if n not in declared)
    return (
        f"declare it in {files} with its name and partitions, then run `stream-infer topics apply`"
    )


def authorized_operations(
    conf: dict[str, Any], names: list[str], timeout: float = 10.0
) -> dict[str, set[str] | KafkaError]:
    """What this client may do on each topic (KIP-430), or the error describing it gave.

    A missing ACL found here stops a worker before it consumes anything, with
    the resource named, instead of at its first produce. Topics the broker did
    not answer for (an old broker, a timeout) are left out: the clients' own
    errors still catch what this cannot.
    """
    quiet: dict[str, Any] = {**conf, "logger": _muted, "log_level": 0}
    admin = AdminClient(quiet)
    out: dict[str, set[str] | KafkaError] = {}
    try:
        futures = admin.describe_topics(
            TopicCollection(list(dict.fromkeys(names))),
            include_authorized_operations=True,
            request_timeout=timeout,
        )
    except KafkaException:
        return out
    for name, future in futures.items():
        try:
            # No timeout of our own: request_timeout ends the request, and a future
            # abandoned while its request is out can complete after the client is gone.
            ops = future.result().authorized_operations
        except KafkaException as exc:
            out[name] = exc.args[0]
            continue
        except Exception:  # a timeout or an unsupported request: leave it to the clients
            continue
        if ops:
            out[name] = {op.name for op in ops}
    return out
