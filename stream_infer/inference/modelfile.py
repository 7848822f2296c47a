"""What an ONNX file may ask of the machine, checked before onnxruntime opens it.

onnxruntime reads a tensor's external data from a path relative to the model
file, and follows ``..`` and absolute paths: a model handed over by someone else
could make the worker read ``/etc/shadow`` or a mounted Secret into a tensor
(and, from there, into predictions). A model may keep its weights in files of
its own folder (or below it); anything that resolves outside is refused, symbolic
links included.

Operators of a domain onnxruntime does not know (custom ops, which need a
shared library stream-infer never loads) are refused with their names, instead
of onnxruntime's graph-resolution error.

The file is parsed with ``onnx`` without its external data: that reads the
graph and inline weights once more (freed at once), which is bounded by
protobuf's 2 GiB limit; larger models keep their weights outside anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream_infer.errors import ModelError

__all__ = ["check_model_file"]

# The default domain has two names.
_DEFAULT_DOMAINS = {"", "ai.onnx"}


def _graphs(graph: Any) -> Iterator[Any]:
    """A graph and every subgraph of its nodes (If, Loop, Scan bodies), depth first."""
    stack = [graph]
    while stack:
        current = stack.pop()
        yield current
        for node in current.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append(attr.g)
                stack.extend(attr.graphs)


def _tensors(model: Any) -> Iterator[Any]:
    """Every tensor that can carry external data: initializers, sparse ones, attributes."""
    graphs = list(_graphs(model.graph))
    for function in model.functions:
        graphs.append(function)
    for graph in graphs:
        yield from getattr(graph, "initializer", ())
        for sparse in getattr(graph, "sparse_initializer", ()):
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices


def _location(tensor: Any) -> str | None:
    from onnx import TensorProto

    if tensor.data_location != TensorProto.EXTERNAL:
        return None
    for entry in tensor.external_data:
        if entry.key == "location":
            return str(entry.value)
    return ""


def _unknown_domains(model: Any, known: set[str]) -> dict[str, list[str]]:
    local = {function.domain for function in model.functions}
    unknown: dict[str, list[str]] = {}
    graphs = [*_graphs(model.graph), *model.functions]
    for graph in graphs:
        for node in graph.node:
            domain = node.domain
            if domain in _DEFAULT_DOMAINS or domain in known or domain in local:
                continue
            ops = unknown.setdefault(domain, [])
            if node.op_type not in ops:
                ops.append(node.op_type)
    return unknown


def _known_domains() -> set[str]:
    """The operator domains this onnxruntime build has kernels or schemas for."""
    try:
        from onnxruntime.capi import _pybind_state

        return {schema.domain for schema in _pybind_state.get_all_operator_schema()}
    except Exception:  # pragma: no cover - a build without schemas: trust the usual ones
        return {"ai.onnx.ml", "com.microsoft"}


def check_model_file(path: Path) -> None:
    """Refuse external data outside the model's folder and unknown operator domains."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"model.path: {path} is not a valid ONNX model ({exc})") from None
    folder = path.resolve().parent
    for tensor in _tensors(model):
        location = _location(tensor)
        if location is None:
            continue
        name = tensor.name or "(unnamed)"
        if not location:
            raise ModelError(
                f"model.path: {path}: tensor '{name}' has external data without a path"
            )
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ModelError(
                f"model.path: {path}: tensor '{name}' reads its data from '{location}', outside "
                f"the model's folder {folder}; refused (keep external data beside the model)"
            )
    unknown = _unknown_domains(model, _known_domains())
    if unknown:
        listed = "; ".join(f"'{d}' ({', '.join(ops[:5])})" for d, ops in sorted(unknown.items()))
        raise ModelError(
            f"model.path: {path} uses operators of a domain this onnxruntime does not know: "
            f"{listed}; custom-op libraries are not loaded by stream-infer (export the model "
            "with standard ONNX operators)"
        )
