"""The ONNX session: provider choice, signature, warm-up and batched ``predict``.

Everything the rest of the pipeline knows about the model (input names,
per-row shapes, dtypes, output names) is read from the model file itself, so a
new model needs no code and no schema file.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream_infer.config import ModelSettings, cache_root
from stream_infer.errors import InferenceError, ModelError
from stream_infer.inference.modelfile import check_model_file
from stream_infer.inference.runners import (
    BoundRunner,
    PaddedRunner,
    Runner,
    buckets_up_to,
    plain_runner,
)
from stream_infer.logging import get_logger

__all__ = ["InputSpec", "Model", "Signature", "lanes_for", "load_model", "read_signature"]

log = get_logger("model")

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_DEVICE_PROVIDERS = {"tensorrt": TRT, "cuda": CUDA, "cpu": CPU}

_ONNX_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One model input as an event must supply it: per row, without the batch axis."""

    name: str
    onnx_type: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...]  # None: a dynamic axis, any length accepted

    @property
    def kind(self) -> str:
        """``f``/``i``/``u`` numeric, ``b`` boolean, ``O`` string: what JSON values fit."""
        return self.dtype.kind

    def fits(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != len(self.shape):
            return False
        return all(want is None or want == got for want, got in zip(self.shape, shape, strict=True))

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.onnx_type.removeprefix('tensor(').rstrip(')')}[{dims}]"


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)


def _dim(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _signature(session: Any) -> tuple[Signature, bool]:
    """Read inputs/outputs from the session; the bool says whether rows can be batched."""
    specs = []
    batchable = True
    for arg in session.get_inputs():
        dtype = _ONNX_DTYPES.get(arg.type)
        if dtype is None:
            raise ModelError(
                f"model input '{arg.name}' has type {arg.type}; only tensors of numbers, "
                "booleans or strings can be fed from JSON events"
            )
        shape = list(arg.shape or [])
        if not shape:
            raise ModelError(
                f"model input '{arg.name}' is a scalar; stream-infer needs a leading batch axis"
            )
        lead = _dim(shape[0])
        if lead is not None and lead != 1:
            raise ModelError(
                f"model input '{arg.name}' has a fixed batch axis of {lead}; "
                "export the model with a dynamic (or size-1) first axis"
            )
        batchable = batchable and lead is None
        specs.append(
            InputSpec(arg.name, arg.type, np.dtype(dtype), tuple(_dim(d) for d in shape[1:]))
        )
    outputs = tuple(arg.name for arg in session.get_outputs())
    return Signature(tuple(specs), outputs), batchable


def _sniff(path: Path) -> None:
    """Refuse files that are clearly not ONNX, with a reason better than a protobuf error."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise ModelError(f"model.path: file not found: {path}") from None
    except IsADirectoryError:
        raise ModelError(f"model.path: {path} is a directory, not an ONNX file") from None
    except OSError as exc:
        raise ModelError(f"model.path: {path} cannot be read: {exc.strerror}") from None
    if not head:
        raise ModelError(f"model.path: {path} is empty")
    if head[:1] == b"\x80" or head[:2] in (b"PK", b"\x1f\x8b"):
        raise ModelError(
            f"model.path: {path} looks like a pickle/joblib/zip archive; stream-infer loads "
            "ONNX models only (convert it with skl2onnx, torch.onnx or tf2onnx)"
        )
    check_model_file(path)  # external data outside its folder, unknown operator domains


@contextlib.contextmanager
def _quiet_ort(ort: Any) -> Iterator[io.StringIO]:
    """Silence onnxruntime's own provider-probing noise; keep it for our message."""
    buf = io.StringIO()
    ort.set_default_logger_severity(4)
    try:
        with contextlib.redirect_stdout(buf):
            yield buf
    finally:
        ort.set_default_logger_severity(2)


class Model:
    """A loaded session and what it needs to be fed.

    ``provider`` is the provider the session really runs on, read back from
    onnxruntime after creation, never the one that was asked for.
    """

    def __init__(
        self,
        session: Any,
        signature: Signature,
        provider: str,
        batchable: bool,
        path: Path,
        runner: Runner | None = None,
        lanes: int = 1,
    ) -> None:
        self._session = session
        self.lanes = lanes  # batches it may run at once (model.concurrent_batches)
        self._run = runner or plain_runner(session)
        self.buckets: tuple[int, ...] = getattr(runner, "buckets", ())
        self.signature = signature
        self.provider = provider
        self.batchable = batchable
        self.path = path
        self._probe_feed: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()  # sessions are thread-safe; the probe cache is not

    def predict(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        """Run one batch; outputs come back in signature order."""
        try:
            return self._run(feeds)
        except Exception as exc:  # onnxruntime raises its own, unrelated classes
            raise InferenceError(f"{type(exc).__name__}: {_first_line(exc)}") from exc

    def zeros(self, rows: int) -> dict[str, np.ndarray]:
        """A synthetic batch (zeros, empty strings; dynamic axes of length 1)."""
        feeds = {}
        for spec in self.signature.inputs:
            shape = (rows, *(1 if d is None else d for d in spec.shape))
            if spec.kind == "O":
                feeds[spec.name] = np.full(shape, "", dtype=object)
            else:
                feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
        return feeds

    def warm_up(self, max_batch_size: int) -> None:
        """Run the largest and the smallest batch once before joining the group.

        The first run allocates arenas and (on GPU) compiles kernels; doing it
        here keeps that second-long stall away from the first real batch and
        from max.poll.interval.ms.
        """
        # With buckets, every one of them: TensorRT builds an engine and CUDA captures a
        # graph per shape, each a long first run that must not land on live traffic.
        sizes = [max_batch_size if self.batchable else 1, *self.buckets, 1]
        for size in dict.fromkeys(s for s in sizes if s <= max(max_batch_size, 1)):
            try:
                self.predict(self.zeros(size))
            except InferenceError as exc:
                raise ModelError(
                    f"warm-up inference on a zero batch of {size} failed: {exc} "
                    "(set model.warmup: false to skip it)"
                ) from None
        self._probe_feed = self.zeros(1)

    def healthy(self) -> bool:
        """Whether a known-good row still runs: tells a broken session from bad rows."""
        with self._lock:
            feed = self._probe_feed
        if feed is None:
            return True  # no known-good input: cannot tell, so trust the rows' errors
        try:
            self.predict(feed)
        except InferenceError:
            return False
        return True

    def file_version(self) -> str | None:
        """The version the file declares: ``metadata_props['version']``, else ``model_version``.

        None when it declares neither: ``model_version`` 0 is protobuf's "unset", and
        onnxruntime reports an unset one as the largest int64.
        """
        meta = self._session.get_modelmeta()
        declared = (meta.custom_metadata_map or {}).get("version", "").strip()
        if declared:
            return str(declared)
        return str(meta.version) if 0 < meta.version < 2**63 - 1 else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else type(exc).__name__


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _binding(settings: ModelSettings, provider: str) -> bool:
    gpu = provider in (CUDA, TRT)
    return settings.io_binding == "on" or (settings.io_binding == "auto" and gpu)


def lanes_for(settings: ModelSettings, provider: str) -> int:
    """How many batches may be in the model at once (``model.concurrent_batches``).

    IO binding keeps one set of buffers per bucket, so its calls cannot overlap;
    on a GPU the device, not the host's cores, is what one call waits for.
    """
    wanted = settings.concurrent_batches
    if wanted == "auto":
        return 1 if provider != CPU or _binding(settings, provider) else min(2, _cores())
    if wanted > 1 and _binding(settings, provider):
        raise ModelError(
            f"model.concurrent_batches={wanted} cannot run with IO binding (its buffers are "
            "per bucket, so calls cannot overlap): set model.io_binding: off, or "
            "model.concurrent_batches: 1"
        )
    return int(wanted)


def _session_options(ort: Any, settings: ModelSettings, lanes: int) -> Any:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if settings.intra_op_threads:
        opts.intra_op_num_threads = settings.intra_op_threads
    elif lanes > 1 or _cores() < (os.cpu_count() or 1):
        # The lanes' calls share the session's one pool, and each calling thread works
        # too: cores - lanes pool threads plus the lanes fill the cores, no more.
        # onnxruntime's own default counts the machine's cores, not the ones this process
        # may use: pinned to one core (a cpuset, `taskset`), it ran two threads on it and
        # the heavy bench model at 4,300 rows/s, against 5,600 with one.
        opts.intra_op_num_threads = max(1, _cores() - lanes + 1)
    if not settings.spin:
        # Idle pool threads sleep instead of spinning for the next call. Measured with
        # the worker on a 12-feature model (2 cores, broker beside it): 9.5 µs of CPU
        # an event with spinning, 4.9 µs without, at the same throughput: the spinning
        # took the cores the consumer, the producer and the broker need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def _provider_options(provider: str, cuda_graphs: bool = False) -> list[Any]:
    if provider == TRT:
        engine_cache = cache_root() / "tensorrt"
        engine_cache.mkdir(parents=True, exist_ok=True)
        trt_opts = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(engine_cache)}
        if cuda_graphs:
            trt_opts["trt_cuda_graph_enable"] = "True"
        return [(TRT, trt_opts), CUDA, CPU]
    if provider == CUDA:
        return [(CUDA, {"enable_cuda_graph": "1"}) if cuda_graphs else CUDA, CPU]
    return [CPU]


def _runner(ort: Any, session: Any, settings: ModelSettings, provider: str, rows: int) -> Runner:
    """The runner for this provider (see ``inference/runners.py``)."""
    gpu = provider in (CUDA, TRT)
    wanted = settings.batch_buckets
    if isinstance(wanted, list):
        buckets: tuple[int, ...] = tuple(sorted(set(wanted)))
    else:
        buckets = buckets_up_to(rows) if (wanted == "auto" and gpu) else ()
    if _binding(settings, provider):
        device = "cuda" if gpu else "cpu"
        return BoundRunner(ort, session, device, buckets or (rows,), settings.cuda_graphs and gpu)
    if buckets:
        return PaddedRunner(plain_runner(session), buckets)
    return plain_runner(session)


def _open(
    ort: Any, path: Path, settings: ModelSettings, provider: str, concurrent: bool = False
) -> tuple[Any, str]:
    # A GPU session keeps onnxruntime's threads (load_model checks its lanes once it runs).
    lanes = lanes_for(settings, provider) if concurrent and provider == CPU else 1
    opts = _session_options(ort, settings, lanes)
    with _quiet_ort(ort) as noise:
        try:
            session = ort.InferenceSession(
                str(path),
                opts,
                providers=_provider_options(provider, settings.cuda_graphs),
            )
        except Exception as exc:
            text = _first_line(exc)
            if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text:
                raise ModelError(f"model.path: {path} is not a valid ONNX model") from None
            raise ModelError(f"model.path: {path} cannot be loaded: {text}") from None
    if noise.getvalue().strip():
        log.debug("onnxruntime while opening %s with %s: %s", path, provider, noise.getvalue())
    return session, session.get_providers()[0]


def load_model(settings: ModelSettings, warmup_rows: int = 512, concurrent: bool = False) -> Model:
    """Open the model on the device ``model.device`` asks for.

    ``auto`` walks TensorRT, CUDA, CPU and keeps the first that the session
    really runs on; an explicit ``cuda`` or ``tensorrt`` that cannot be honoured
    is an error, never a silent fall back to CPU. ``concurrent``: for the native
    worker, whose inference stage runs ``model.concurrent_batches`` calls at once
    (every other user runs one call at a time, on all the cores).
    """
    import onnxruntime as ort

    path = Path(settings.path)
    _sniff(path)
    available = ort.get_available_providers()
    if settings.device == "auto":
        wanted = [p for p in (TRT, CUDA) if p in available] + [CPU]
    else:
        wanted = [_DEVICE_PROVIDERS[settings.device]]
        if wanted[0] not in available:
            raise ModelError(
                f"model.device={settings.device}: {wanted[0]} is not in this onnxruntime build "
                f"(available: {', '.join(available)}; install onnxruntime-gpu for cuda/tensorrt)"
            )
    session, actual = None, ""
    for provider in wanted:
        session, actual = _open(ort, path, settings, provider, concurrent)
        if actual == provider:
            break
        log.info(
            "%s is listed but cannot run here (libraries or GPU missing); trying the next", provider
        )
    if session is None or (settings.device != "auto" and actual != wanted[0]):
        raise ModelError(
            f"model.device={settings.device}: onnxruntime could not start {wanted[0]} "
            f"(the session fell back to {actual}); check the CUDA/cuDNN/TensorRT libraries "
            "and the GPU, or use model.device: auto"
        )
    signature, batchable = _signature(session)
    runner = _runner(ort, session, settings, actual, warmup_rows if batchable else 1)
    lanes = lanes_for(settings, actual) if concurrent else 1
    model = Model(session, signature, actual, batchable, path, runner, lanes)
    log.info(
        "model %s v%s loaded from %s on %s; inputs: %s; outputs: %s%s",
        settings.name,
        settings.version,
        path,
        actual,
        ", ".join(spec.describe() for spec in signature.inputs),
        ", ".join(signature.outputs),
        "" if batchable else " (fixed batch of 1: rows run one at a time)",
    )
    if model.lanes > 1:
        log.info("up to %d batches run the model at once (model.concurrent_batches)", model.lanes)
    if settings.warmup:
        model.warm_up(warmup_rows)
    return model


def read_signature(path: str | Path) -> Signature:
    """What the model takes and returns, for tools that shape events but run nothing.

    A CPU session only: no provider probing (which logs about TensorRT and CUDA),
    no warm-up, no log line.
    """
    import onnxruntime as ort

    model_path = Path(path)
    _sniff(model_path)
    settings = ModelSettings.model_validate(
        {"path": str(model_path), "device": "cpu", "warmup": False}
    )
    session, _ = _open(ort, model_path, settings, CPU)
    return _signature(session)[0]
