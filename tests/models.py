"""Tiny real ONNX models built with the ``onnx`` helpers, one per behaviour under test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import orjson
from onnx import TensorProto, helper, numpy_helper

from stream_infer.config import ModelSettings
from stream_infer.inference.model import Model, load_model

OPSET = [helper.make_opsetid("", 17)]


def loaded(path: Path) -> Model:
    """A model as the worker loads it (without the warm-up, to keep unit tests quick)."""
    return load_model(ModelSettings(path=str(path), warmup=False))


def event(features: object, **extra: object) -> bytes:
    return orjson.dumps({"features": features, **extra})


def _save(graph: onnx.GraphProto, path: Path, version: str | None = None) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="stream-infer-tests")
    model.ir_version = 8
    if version is not None:  # what a hot reload reads as the file's own version
        helper.set_model_props(model, {"version": version})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def linear(
    path: Path, n_features: int = 4, n_out: int = 3, seed: int = 7, version: str | None = None
) -> Path:
    """scores = x @ W + b (float32), best = argmax(scores): two outputs of different ranks.

    Another ``seed`` gives other weights (a retrained "version 2"); ``version`` is
    written into the file's metadata.
    """
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(n_features, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(n_out,)).astype(np.float32), "B")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["best"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_features])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_out]),
            helper.make_tensor_value_info("best", TensorProto.INT64, ["batch"]),
        ],
        [w, b],
    )
    return _save(graph, path, version)


def failing_linear(path: Path, version: str | None = None) -> Path:
    """The linear model's inputs and outputs, failing in onnxruntime on every row whose
    second feature is 1 or more in magnitude (an out-of-range Gather), so it passes its
    warm-up on zeros and fails on real rows: a broken candidate model."""
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W")
    table = numpy_helper.from_array(np.zeros(1, dtype=np.float32), "table")
    starts = numpy_helper.from_array(np.array([1], dtype=np.int64), "starts")
    ends = numpy_helper.from_array(np.array([2], dtype=np.int64), "ends")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["second"]),
        helper.make_node("Cast", ["second"], ["idx"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "idx"], ["picked"], axis=0),
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "picked"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["best"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "failing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("best", TensorProto.INT64, ["batch"]),
        ],
        [w, table, starts, ends, axes],
    )
    return _save(graph, path, version)


def gather(path: Path, size: int = 10) -> Path:
    """value = table[idx]: an index outside [-size, size) fails inside onnxruntime, per row."""
    table = numpy_helper.from_array(np.arange(size, dtype=np.float32) * 10, "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["value"], axis=0)],
        "gather",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 1])],
        [table],
    )
    return _save(graph, path)


def multi_input(path: Path) -> Path:
    """Inputs a: float[3] and b: int64[2, 2] per row; outputs a_sum and b_max."""
    axes1 = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1")
    axes12 = numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes12")
    nodes = [
        helper.make_node("ReduceSum", ["a", "axes1"], ["a_sum"], keepdims=0),
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["bf"], ["b_max"], axes=[1, 2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "multi",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 2, 2]),
        ],
        [
            helper.make_tensor_value_info("a_sum", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("b_max", TensorProto.FLOAT, ["batch"]),
        ],
        [axes1, axes12],
    )
    return _save(graph, path)


def dynamic_seq(path: Path) -> Path:
    """seq: float[?] per row (variable length); total = sum over the sequence."""
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["seq", "axes"], ["total"], keepdims=0)],
        "dynamic",
        [helper.make_tensor_value_info("seq", TensorProto.FLOAT, ["batch", "length"])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"])],
        [axes],
    )
    return _save(graph, path)


def typed(path: Path, elem: int, name: str = "v", width: int = 3) -> Path:
    """Identity over one input of the given element type: echoes what was fed."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], ["out"])],
        "typed",
        [helper.make_tensor_value_info(name, elem, ["batch", width])],
        [helper.make_tensor_value_info("out", elem, ["batch", width])],
    )
    return _save(graph, path)


def fixed_batch(path: Path, batch: int) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
    )
    return _save(graph, path)


def slow(path: Path, iterations: int, size: int = 384) -> Path:
    """y = x, after ``iterations`` size x size matrix products that depend on x.

    The products are real work onnxruntime cannot fold away (they depend on
    the input), so a batch takes as long as the loop does: a slow model that
    is still a real one.
    """
    eye = numpy_helper.from_array(np.eye(size, dtype=np.float32), "eye")
    shape = numpy_helper.from_array(np.array([size, size], dtype=np.int64), "shape")
    trip = numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trip")
    cond = numpy_helper.from_array(np.array(True), "cond")
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["m_in", "eye"], ["m_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_in", TensorProto.FLOAT, [size, size]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_out", TensorProto.FLOAT, [size, size]),
        ],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Expand", ["s", "shape"], ["m0"]),
        helper.make_node("Loop", ["trip", "cond", "m0"], ["m_final"], body=body),
        helper.make_node("ReduceMin", ["m_final"], ["lo"], keepdims=0),
        helper.make_node("Mul", ["lo", "zero"], ["nothing"]),
        helper.make_node("Add", ["x", "nothing"], ["y"]),
    ]
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [eye, shape, trip, cond, zero],
    )
    return _save(graph, path)
