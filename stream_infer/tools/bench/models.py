"""The models a benchmark runs, and the events shaped for them.

``tabular`` (the default) is a small trained classifier: 12 features, a scaler
and an MLP (32, 16) trained on scikit-learn's generated classification data and
exported with skl2onnx. 12 features is the "small tabular model" that the
targets are stated for, and a generated dataset keeps the rows free of any
pattern a bundled dataset would bring (the demo model has 30 features and
runs the same way; pass ``--model models/demo.onnx`` to bench it). ``heavy``
is the model that target is stated for: a 6-layer, 2048-wide MLP (12 -> 6 x
2048 -> 2, 84 MB) with random weights, whose cost dominates, for the
"stream-infer vs onnxruntime alone" comparison.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

from stream_infer.errors import StreamInferError

__all__ = ["BUILTIN_MODELS", "BenchModel", "model_events", "resolve_model"]

BUILTIN_MODELS = ("tabular", "heavy")
_FEATURES = 12


@dataclass(frozen=True)
class BenchModel:
    path: Path
    name: str  # the built-in name, or the file's name
    description: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "path": str(self.path),
            "description": self.description,
            "sha256": self.sha256,
        }


def _tabular(path: Path) -> str:
    try:
        import numpy as np
        from skl2onnx import to_onnx
        from sklearn.datasets import make_classification
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise StreamInferError(
            "the built-in tabular model needs scikit-learn and skl2onnx: "
            "pip install 'stream-infer[bench]' (or pass --model FILE)"
        ) from None
    x, y = make_classification(
        n_samples=4000, n_features=_FEATURES, n_informative=8, random_state=0
    )
    clf = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(32, 16), alpha=1.0, random_state=0, max_iter=500),
    ).fit(x[:3000], y[:3000])
    accuracy = float(clf.score(x[3000:], y[3000:]))
    onx = to_onnx(clf, x[:1].astype(np.float32), options={"zipmap": False}, target_opset=17)
    path.write_bytes(onx.SerializeToString())
    return (
        f"12 features, scaler + MLP (32, 16) trained on scikit-learn's make_classification "
        f"(hold-out accuracy {accuracy:.3f}), skl2onnx; outputs label and probabilities"
    )


def _heavy(path: Path, width: int = 2048, layers: int = 6) -> str:
    try:
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise StreamInferError(
            "the built-in heavy model needs the onnx package: pip install 'stream-infer[bench]'"
        ) from None
    rng = np.random.default_rng(0)
    dims = [_FEATURES] + [width] * layers + [2]
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        w = (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"W{i}"),
            numpy_helper.from_array(np.zeros(b, np.float32), f"B{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}"]),
        ]
        prev = f"a{i}"
        if i < layers:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Softmax", [prev], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "bench-heavy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", _FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return f"12 features, MLP {' -> '.join(map(str, dims))} with random weights (model-bound)"


def resolve_model(spec: str, work: Path) -> BenchModel:
    """A built-in name (built into ``work``) or an ONNX file used as it is."""
    if spec in BUILTIN_MODELS:
        path = work / f"{spec}.onnx"
        description = _tabular(path) if spec == "tabular" else _heavy(path)
        name = spec
    else:
        path = Path(spec).resolve()
        if not path.is_file():
            raise StreamInferError(
                f"--model: {spec} is neither a file nor a built-in model "
                f"({', '.join(BUILTIN_MODELS)})"
            )
        name, description = path.name, f"{path} (given with --model)"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return BenchModel(path, name, description, digest)


def model_events(path: Path, count: int, seed: int = 0) -> list[tuple[bytes | None, bytes]]:
    """``count`` events shaped for the model, as ``stream-infer produce --count`` makes them."""
    from stream_infer.inference.model import read_signature
    from stream_infer.tools.loadgen import generated_events

    return list(itertools.islice(generated_events(read_signature(path), seed), count))
