"""How a batch is handed to onnxruntime: plainly, padded to a bucket, or through IO binding.

On a CPU, ``session.run`` on the batch as it is costs nothing to improve on.
On a GPU three things pay:

- *buckets*: a batch is padded (with copies of its last row) to the next of a
  few fixed sizes, and the outputs cut back. TensorRT builds an engine per
  input shape and CUDA graphs replay one shape; with buckets there are a
  handful of shapes instead of one per batch size ever seen;
- *IO binding*: inputs and outputs live in buffers allocated once per bucket
  and bound to the session, so a run does not allocate on the device, and the
  outputs are copied back in one go;
- *pinned host buffers*: inputs are staged in page-locked host memory, which
  the device reads by DMA without another copy (falls back to ordinary memory,
  with one log line, where the build cannot allocate it);
- *CUDA graphs* (``model.cuda_graphs``, CUDA only): the kernels of a bucket
  are captured once and replayed, which removes the launch cost that
  dominates small tabular models on a GPU.

Every runner returns the outputs of exactly the rows it was given, as
``session.run`` would, so the rest of the pipeline cannot tell them apart
(the tests check it row by row).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stream_infer.logging import get_logger

__all__ = ["BoundRunner", "PaddedRunner", "Runner", "buckets_up_to", "plain_runner"]

log = get_logger("model")

Runner = Callable[[dict[str, np.ndarray]], list[Any]]


def plain_runner(session: Any) -> Runner:
    def run(feeds: dict[str, np.ndarray]) -> list[Any]:
        return list(session.run(None, feeds))

    return run


def buckets_up_to(max_rows: int) -> tuple[int, ...]:
    """Powers of two up to ``max_rows`` (which is always the last bucket)."""
    sizes = []
    size = 1
    while size < max_rows:
        sizes.append(size)
        size *= 2
    sizes.append(max_rows)
    return tuple(sizes)


def _rows(feeds: dict[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0])


def _pad(feeds: dict[str, np.ndarray], to: int) -> dict[str, np.ndarray]:
    """Rows added by repeating the last real row: a valid input, whatever the model."""
    out = {}
    for name, arr in feeds.items():
        extra = to - arr.shape[0]
        out[name] = np.concatenate([arr, np.repeat(arr[-1:], extra, axis=0)]) if extra else arr
    return out


def _cut(outputs: Sequence[Any], rows: int, padded: int) -> list[Any]:
    if rows == padded:
        return list(outputs)
    return [
        o[:rows]
        if (isinstance(o, np.ndarray) and o.ndim and o.shape[0] == padded)
        or (isinstance(o, list) and len(o) == padded)  # sequence outputs (ZipMap)
        else o
        for o in outputs
    ]


class PaddedRunner:
    """Pads every batch to the next bucket, runs ``inner``, cuts the outputs back."""

    def __init__(self, inner: Runner, buckets: Sequence[int]) -> None:
        self._inner = inner
        self.buckets = tuple(sorted(set(buckets)))

    def bucket(self, rows: int) -> int:
        """The smallest bucket holding ``rows``; beyond the largest, the rows as they are."""
        i = bisect.bisect_left(self.buckets, rows)
        return self.buckets[i] if i < len(self.buckets) else rows

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        rows = _rows(feeds)
        size = self.bucket(rows)
        return _cut(self._inner(_pad(feeds, size) if size != rows else feeds), rows, size)


class _Bound:
    """One bucket's binding: input buffers (pinned when possible) and device outputs."""

    def __init__(
        self, ort: Any, session: Any, device: str, feeds: dict[str, np.ndarray], pinned: Any
    ) -> None:
        self.binding = session.io_binding()
        self.graph_id = 0
        self.inputs: dict[str, Any] = {}
        for name, arr in feeds.items():
            value = _staging(ort, arr, pinned) if pinned is not None else None
            if value is None:
                value = ort.OrtValue.ortvalue_from_numpy(arr, device, 0)
            self.inputs[name] = value
            self.binding.bind_ortvalue_input(name, value)
        for out in session.get_outputs():
            self.binding.bind_output(out.name, device)


def _staging(ort: Any, arr: np.ndarray, pinned: Any) -> Any | None:
    try:
        value = ort.OrtValue.ortvalue_from_shape_and_type(
            list(arr.shape), arr.dtype, memory_info=pinned
        )
        value.update_inplace(arr)
        return value
    except Exception:
        return None


class BoundRunner:
    """Runs through IO binding, one binding per bucket size (and one CUDA graph per bucket).

    Buffers of a bucket are allocated at its first use and refilled in place
    afterwards (``update_inplace``), which is what CUDA graph replay needs:
    the same addresses every time.
    """

    def __init__(
        self,
        ort: Any,
        session: Any,
        device: str,
        buckets: Sequence[int],
        cuda_graphs: bool = False,
    ) -> None:
        self._ort = ort
        self._session = session
        self._device = device
        self._padder = PaddedRunner(lambda feeds: [], buckets)
        self._graphs = cuda_graphs
        self._bound: dict[tuple[tuple[int, ...], ...], _Bound] = {}  # by padded input shapes
        self._pinned = self._pinned_memory() if device == "cuda" else None
        self._fallback: Runner | None = None  # set if the model cannot be bound at all
        self.buckets = self._padder.buckets

    def _pinned_memory(self) -> Any | None:
        C = self._ort.capi._pybind_state
        try:
            info = C.OrtMemoryInfo(
                "CudaPinned", C.OrtAllocatorType.ORT_DEVICE_ALLOCATOR, 0, C.OrtMemType.CPU_OUTPUT
            )
            probe = self._ort.OrtValue.ortvalue_from_shape_and_type(
                [1], np.float32, memory_info=info
            )
            del probe
        except Exception as exc:
            log.info("pinned host memory not available (%s); staging in ordinary memory", exc)
            return None
        log.info("inputs staged in pinned host memory")
        return info

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        if self._fallback is not None:
            return self._fallback(feeds)
        rows = _rows(feeds)
        size = self._padder.bucket(rows)
        padded = _pad(feeds, size) if size != rows else feeds
        key = tuple(arr.shape for arr in padded.values())
        bound = self._bound.get(key)
        if bound is None:
            try:
                bound = _Bound(self._ort, self._session, self._device, padded, self._pinned)
            except Exception as exc:  # e.g. sequence outputs, which cannot be bound
                log.info("IO binding not possible for this model (%s); running plainly", exc)
                self._fallback = PaddedRunner(plain_runner(self._session), self.buckets)
                return self._fallback(feeds)
            bound.graph_id = len(self._bound)  # one captured graph per input shape
            self._bound[key] = bound
        else:
            for name, arr in padded.items():
                bound.inputs[name].update_inplace(arr)
        options = None
        if self._graphs:
            options = self._ort.RunOptions()
            options.add_run_config_entry("gpu_graph_id", str(bound.graph_id))
        self._session.run_with_iobinding(bound.binding, options)
        return _cut(bound.binding.copy_outputs_to_cpu(), rows, size)
