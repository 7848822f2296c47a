"""Model files that ask too much: external data outside their folder, unknown operator domains."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stream_infer.errors import ModelError
from tests.models import OPSET, loaded


def _external(folder: Path, location: str) -> Path:
    """y = x + W, with W's 4 floats stored at ``location`` (relative to the model's folder)."""
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    tensor = model.graph.initializer[0]
    raw = tensor.raw_data
    target = (folder / location).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(raw)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_external_data_beside_the_model_loads(tmp_path: Path) -> None:
    model = loaded(_external(tmp_path / "m", "weights/w.bin"))
    out = model.predict({"x": np.zeros((1, 4), dtype=np.float32)})
    assert out[0].tolist() == [[0.0, 1.0, 2.0, 3.0]]


@pytest.mark.parametrize("location", ["../secret.bin", "weights/../../secret.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    path = _external(tmp_path / "m", location)
    assert (tmp_path / "secret.bin").is_file()  # onnxruntime would read it
    with pytest.raises(ModelError, match=r"reads its data from .*outside the model's folder"):
        loaded(path)


def test_an_absolute_external_path_is_refused(tmp_path: Path) -> None:
    path = _external(tmp_path / "m", str(tmp_path / "abs.bin"))
    with pytest.raises(ModelError, match="outside the model's folder"):
        loaded(path)


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    path = _external(tmp_path / "m", "w.bin")
    outside = tmp_path / "outside.bin"
    os.replace(tmp_path / "m" / "w.bin", outside)
    (tmp_path / "m" / "w.bin").symlink_to(outside)
    with pytest.raises(ModelError, match="outside the model's folder"):
        loaded(path)


def test_an_unknown_operator_domain_is_named(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example.custom")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[*OPSET, helper.make_opsetid("com.example.custom", 1)]
    )
    model.ir_version = 8
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError) as err:
        loaded(path)
    assert (
        "operators of a domain this onnxruntime does not know: 'com.example.custom' "
        "(Frobnicate)" in str(err.value)
    )
    assert "custom-op libraries are not loaded" in str(err.value)
