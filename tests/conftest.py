"""Fixtures shared by unit and integration tests: real ONNX models built on the spot."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import models


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def linear_model(model_dir: Path) -> Path:
    return models.linear(model_dir / "linear.onnx")


@pytest.fixture(scope="session")
def gather_model(model_dir: Path) -> Path:
    return models.gather(model_dir / "gather.onnx")


@pytest.fixture(scope="session")
def multi_model(model_dir: Path) -> Path:
    return models.multi_input(model_dir / "multi.onnx")


@pytest.fixture(scope="session")
def dynamic_model(model_dir: Path) -> Path:
    return models.dynamic_seq(model_dir / "dynamic.onnx")


@pytest.fixture(scope="session")
def demo_model(model_dir: Path) -> Path:
    """The real demo classifier, trained afresh (the committed file is not trusted blindly)."""
    from stream_infer.tools.demo import train_demo_model

    path = model_dir / "demo.onnx"
    accuracy = train_demo_model(path)
    assert accuracy > 0.9, f"demo model trained badly: {accuracy}"
    return path


@pytest.fixture(scope="module")
def linear(linear_model: Path) -> object:
    """The linear model, loaded."""
    return models.loaded(linear_model)


@pytest.fixture
def make_model(model_dir: Path) -> Callable[..., Path]:
    """Build any model of ``tests.models`` by name, into its own file."""
    counter = iter(range(10**6))

    def build(kind: str, *args: object, **kwargs: object) -> Path:
        return getattr(models, kind)(model_dir / f"{kind}-{next(counter)}.onnx", *args, **kwargs)

    return build


def has_gpu() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def demo_model_zipmap(model_dir: Path) -> Path:
    """A real classifier whose probabilities come out as a ZipMap: a sequence of maps."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    x, y = load_breast_cancer(return_X_y=True)
    clf = LogisticRegression(max_iter=5000).fit(x, y)
    onx = to_onnx(clf, x[:1].astype("float32"), target_opset=17)  # zipmap on by default
    path = model_dir / "zipmap.onnx"
    path.write_bytes(onx.SerializeToString())
    return path
