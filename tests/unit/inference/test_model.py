"""Loading models: the real provider is reported, and every way a model file can be wrong."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from stream_infer.config import ModelSettings
from stream_infer.errors import ModelError
from stream_infer.inference.model import CPU, CUDA, load_model
from tests.conftest import has_gpu


def _load(path: Path, **kw: object):
    return load_model(ModelSettings(path=str(path), **kw))  # type: ignore[arg-type]


def test_signature_is_read_from_the_model(multi_model: Path) -> None:
    model = _load(multi_model)
    assert [(s.name, s.dtype.name, s.shape) for s in model.signature.inputs] == [
        ("a", "float32", (3,)),
        ("b", "int64", (2, 2)),
    ]
    assert model.signature.outputs == ("a_sum", "b_max")
    assert model.batchable


@pytest.mark.skipif(has_gpu(), reason="checks the CPU fallback of a machine without a GPU")
def test_auto_reports_the_provider_the_session_really_uses(linear_model: Path) -> None:
    model = _load(linear_model, device="auto")
    # onnxruntime-gpu lists CUDA here although it cannot load it: we must not believe the list.
    assert model.provider == CPU
    assert model.provider == model._session.get_providers()[0]


@pytest.mark.skipif(has_gpu(), reason="on a GPU machine cuda can be honoured")
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_explicit_gpu_that_cannot_run_is_a_startup_error(linear_model: Path, device: str) -> None:
    with pytest.raises(ModelError, match=f"model.device={device}"):
        _load(linear_model, device=device)


@pytest.mark.skipif(
    not has_gpu(), reason="needs an NVIDIA GPU with onnxruntime-gpu and CUDA libraries"
)
def test_cuda_is_used_when_present(linear_model: Path) -> None:
    model = _load(linear_model, device="cuda")
    assert model.provider == CUDA
    out = model.predict({"x": np.ones((2, 4), dtype=np.float32)})
    assert out[0].shape == (2, 3)


def test_predictions_equal_onnxruntime(linear_model: Path) -> None:
    model = _load(linear_model, device="cpu")
    x = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    ref = ort.InferenceSession(str(linear_model), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )
    got = model.predict({"x": x})
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
    np.testing.assert_array_equal(got[1], ref[1])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model\.path: file not found"):
        _load(tmp_path / "nope.onnx")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is a directory"):
        _load(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="is empty"):
        _load(tmp_path / "empty.onnx")


def test_pickle_is_refused_without_being_loaded(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelError, match="pickle/joblib"):
        _load(path)


def test_garbage_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"this is not a protobuf at all" * 10)
    with pytest.raises(
        ModelError, match=r"model\.path: .* (is not a valid ONNX model|cannot be loaded)"
    ):
        _load(path)


def test_truncated_model(tmp_path: Path, linear_model: Path) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes(linear_model.read_bytes()[:60])
    with pytest.raises(ModelError, match=r"model\.path"):
        _load(path)


def test_fixed_batch_larger_than_one_is_refused(make_model) -> None:
    with pytest.raises(ModelError, match="fixed batch axis of 8"):
        _load(make_model("fixed_batch", 8))


def test_fixed_batch_of_one_runs_rows_alone(make_model) -> None:
    model = _load(make_model("fixed_batch", 1))
    assert not model.batchable


def test_warm_up_failure_is_a_startup_error(gather_model: Path, tmp_path: Path) -> None:
    # Zero indices are valid for the gather model, so warm-up passes...
    assert _load(gather_model).healthy()
    # ...whereas a model that cannot run on its own synthetic batch fails loudly.
    from tests import models

    path = models.gather(tmp_path / "empty_table.onnx", size=0)
    with pytest.raises(ModelError, match="warm-up inference"):
        _load(path)
    assert _load(path, warmup=False).batchable  # loads fine when warm-up is off
