"""One exception tree, one branch per stage of the data flow.

Callers catch the branch that matches what they can recover from: a
:class:`RecordError` is about one event and ends in the dead-letter topic, every
other error is about the worker itself and ends the process with a clear line.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "BrokerError",
    "CommitError",
    "ConfigError",
    "DecodeError",
    "DriftError",
    "InferenceError",
    "KafkaClientError",
    "ModelError",
    "ProduceError",
    "RecordError",
    "StreamInferError",
    "TopicError",
    "ValidationError",
    "kafka_error_text",
]

Stage = Literal["decode", "validate", "inference", "produce"]


class StreamInferError(Exception):
    """Root of every error stream-infer raises on purpose."""


class ConfigError(StreamInferError):
    """The configuration file, an environment override or a CLI option is wrong."""


class BrokerError(StreamInferError):
    """The local development broker could not be fetched, started or stopped."""


class TopicError(StreamInferError):
    """A topic declaration is wrong, or the broker refused to apply it."""


class ModelError(StreamInferError):
    """The ONNX model cannot be loaded or cannot run on the requested device."""


class KafkaClientError(StreamInferError):
    """A Kafka client call failed for good (after retries, or not retriable)."""

    def __init__(self, message: str, error: Any = None) -> None:
        super().__init__(f"{message}: {kafka_error_text(error)}" if error is not None else message)
        self.error = error


class ProduceError(KafkaClientError):
    """A record could not be delivered, and no dead letter can stand in for it."""


class CommitError(KafkaClientError):
    """Offsets could not be committed."""


class DriftError(StreamInferError):
    """A drift baseline cannot be built or read, or was built for another model."""


class InferenceError(StreamInferError):
    """onnxruntime failed on a batch (a per-row failure is narrowed down first)."""


class RecordError(StreamInferError):
    """One event cannot be predicted; it goes to the dead-letter topic.

    The raw message is kept so that it can be dead-lettered byte for byte.
    """

    stage: Stage = "validate"

    def __init__(self, message: str, raw: Any = None) -> None:
        super().__init__(message)
        self.raw = raw


class DecodeError(RecordError):
    """The value is not JSON (or not a value at all: a tombstone)."""

    stage: Stage = "decode"


class ValidationError(RecordError):
    """The JSON does not fit the model's inputs."""

    stage: Stage = "validate"


def kafka_error_text(error: Any) -> str:
    """Render a ``KafkaError`` with its code name, as operators search for those.

    librdkafka's message alone ("Local: Timed out") hides which of the dozens of
    timeouts happened; the name (``_MSG_TIMED_OUT``) does not.
    """
    name = getattr(error, "name", None)
    if callable(name):
        try:
            return f"{error.str()} [{name()}]"
        except Exception:  # pragma: no cover - defensive: never fail while reporting
            return str(error)
    return str(error)
