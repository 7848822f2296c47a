"""The GPU path's runners give back exactly what ``session.run`` gives, row for row.

Padding to buckets and IO binding are checked on the CPU (onnxruntime binds to
"cpu" buffers the same way); what needs a GPU (CUDA buffers, pinned staging,
CUDA graphs) is in the tests marked for one, which skip, saying why, elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from stream_infer.config import ModelSettings
from stream_infer.inference.model import load_model
from stream_infer.inference.runners import BoundRunner, PaddedRunner, buckets_up_to
from tests.conftest import has_gpu


def _reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def _same(got: list, want: list) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_bucket_sizes_are_powers_of_two_ending_at_the_maximum() -> None:
    assert buckets_up_to(1) == (1,)
    assert buckets_up_to(512) == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    assert buckets_up_to(100) == (1, 2, 4, 8, 16, 32, 64, 100)


@pytest.mark.parametrize("binding", ["off", "on"])
def test_padded_and_bound_runs_equal_plain_runs_for_every_size(
    linear_model: Path, binding: str
) -> None:
    settings = ModelSettings(
        path=str(linear_model),
        device="cpu",
        warmup=False,
        batch_buckets=[1, 4, 16],
        io_binding=binding,
    )
    model = load_model(settings, warmup_rows=16)
    expected_runner = BoundRunner if binding == "on" else PaddedRunner
    assert isinstance(model._run, expected_runner)
    rng = np.random.default_rng(5)
    for rows in (1, 2, 3, 4, 5, 15, 16, 17, 40):
        x = rng.normal(size=(rows, 4)).astype(np.float32)
        _same(model.predict({"x": x}), _reference(linear_model, {"x": x}))


def test_a_bound_runner_reuses_one_binding_per_bucket(linear_model: Path) -> None:
    settings = ModelSettings(
        path=str(linear_model), device="cpu", warmup=False, batch_buckets=[4, 16], io_binding="on"
    )
    model = load_model(settings, warmup_rows=16)
    runner = model._run
    assert isinstance(runner, BoundRunner)
    for rows in (1, 3, 4, 9, 16, 2, 12):
        x = np.full((rows, 4), float(rows), dtype=np.float32)
        _same(model.predict({"x": x}), _reference(linear_model, {"x": x}))
    assert len(runner._bound) == 2  # buckets 4 and 16, refilled in place after their first use


def test_rows_of_other_lengths_get_their_own_binding(dynamic_model: Path) -> None:
    settings = ModelSettings(
        path=str(dynamic_model), device="cpu", warmup=False, batch_buckets=[8], io_binding="on"
    )
    model = load_model(settings, warmup_rows=8)
    for length in (3, 5, 3):
        seq = np.arange(6 * length, dtype=np.float32).reshape(6, length)
        _same(model.predict({"seq": seq}), _reference(dynamic_model, {"seq": seq}))


def test_sequence_outputs_come_back_as_session_run_gives_them(demo_model_zipmap: Path) -> None:
    # On a CPU a sequence of maps can be bound; on a GPU it cannot, and the runner
    # falls back to plain runs. Either way the rows must be what session.run gives.
    settings = ModelSettings(
        path=str(demo_model_zipmap), device="cpu", warmup=False, io_binding="on"
    )
    model = load_model(settings, warmup_rows=8)
    x = np.random.default_rng(2).normal(size=(3, 30)).astype(np.float32)
    got = model.predict({"X": x})
    want = _reference(demo_model_zipmap, {"X": x})
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]


def test_cuda_graphs_need_fixed_buffers() -> None:
    with pytest.raises(ValidationError, match="cuda_graphs needs io_binding"):
        ModelSettings(cuda_graphs=True, io_binding="off")
    with pytest.raises(ValidationError, match="batch sizes"):
        ModelSettings(batch_buckets=[0, 8])


@pytest.mark.skipif(
    not has_gpu(), reason="needs an NVIDIA GPU with onnxruntime-gpu and CUDA libraries"
)
@pytest.mark.parametrize("graphs", [False, True])
def test_the_gpu_path_equals_the_cpu_row_for_row(linear_model: Path, graphs: bool) -> None:
    settings = ModelSettings(path=str(linear_model), device="cuda", warmup=True, cuda_graphs=graphs)
    model = load_model(settings, warmup_rows=64)
    assert isinstance(model._run, BoundRunner)
    assert model._run._pinned is not None  # inputs staged in pinned host memory
    rng = np.random.default_rng(9)
    for rows in (1, 7, 64, 33, 7):
        x = rng.normal(size=(rows, 4)).astype(np.float32)
        got = model.predict({"x": x})
        want = _reference(linear_model, {"x": x})
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(got[1], want[1])
