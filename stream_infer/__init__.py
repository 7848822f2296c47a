"""stream-infer: batched ONNX inference over Kafka streams."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stream-infer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
