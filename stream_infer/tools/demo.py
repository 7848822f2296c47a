"""The demo: a real classifier trained on scikit-learn's bundled breast-cancer data, and its events.

The model is a scaler plus a small neural network, exported to ONNX with
skl2onnx (``label`` and ``probabilities`` outputs). The worker never imports
scikit-learn: only the demo producer and the training step do.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream_infer.errors import StreamInferError

__all__ = [
    "baseline_path",
    "demo_dataset",
    "demo_events",
    "demo_split",
    "ensure_demo_model",
    "train_demo_model",
    "write_demo_baseline",
]

DEMO_MODEL_PATH = Path("models/demo.onnx")


def _require_sklearn() -> Any:
    try:
        import sklearn.datasets
    except ImportError:
        raise StreamInferError(
            "the demo needs scikit-learn and skl2onnx: pip install 'stream-infer[demo]'"
        ) from None
    return sklearn.datasets


def demo_dataset() -> tuple[Any, Any, list[str]]:
    """Features (569 x 30, float64), labels, and the feature names."""
    datasets = _require_sklearn()
    data = datasets.load_breast_cancer()
    return data.data, data.target, list(data.feature_names)


def demo_split() -> tuple[Any, Any, Any, Any]:
    """x_train, x_test, y_train, y_test: the model is trained, and its baseline built, on train."""
    _require_sklearn()
    from sklearn.model_selection import train_test_split

    x, y, _ = demo_dataset()
    split: tuple[Any, Any, Any, Any] = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return split


def baseline_path(model_path: str | Path) -> Path:
    """A model's drift baseline lives beside it: ``demo.onnx`` -> ``demo.baseline.json``."""
    return Path(model_path).with_suffix(".baseline.json")


def write_demo_baseline(
    model_path: str | Path = DEMO_MODEL_PATH, out: str | Path | None = None
) -> Path:
    """The drift baseline of the demo model, from the split it was trained on.

    The rows go through float32 exactly as the decoder would feed them from JSON
    events, so this equals ``stream-infer drift baseline`` run on the training rows.
    """
    import numpy as np

    from stream_infer.config import ModelSettings
    from stream_infer.inference.baseline import build_baseline
    from stream_infer.inference.baseline_file import save_baseline
    from stream_infer.inference.model import load_model

    settings = ModelSettings.model_validate(
        {"path": str(model_path), "device": "cpu", "warmup": False}
    )
    model = load_model(settings)
    x_train = demo_split()[0]
    feeds = {model.signature.inputs[0].name: np.asarray(x_train, dtype=np.float32)}
    target = Path(out) if out is not None else baseline_path(model_path)
    save_baseline(build_baseline(model, [feeds], name="demo", version="1"), target)
    return target


def train_demo_model(path: str | Path = DEMO_MODEL_PATH, baseline: bool = True) -> float:
    """Train, export to ONNX at ``path`` (atomically) and return the hold-out accuracy.

    With ``baseline``, the drift baseline is rewritten beside the model: a
    retrained model needs a new one (the old one names the old file's digest).
    """
    _require_sklearn()
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_test, y_train, y_test = demo_split()
    # alpha=1.0: strong enough L2 that probabilities stay informative instead
    # of collapsing to 0/1 (same 95.8% hold-out accuracy as a weak penalty).
    clf = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(32, 16), alpha=1.0, random_state=0, max_iter=2000),
    ).fit(x_train, y_train)
    accuracy = float(clf.score(x_test, y_test))
    onx = to_onnx(clf, x_train[:1].astype(np.float32), options={"zipmap": False}, target_opset=17)
    onx.doc_string = (
        "stream-infer demo: breast-cancer classifier (scikit-learn bundled data), "
        f"hold-out accuracy {accuracy:.3f}"
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".demo-", suffix=".onnx", dir=target.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(onx.SerializeToString())
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is not a secret
    os.replace(tmp, target)
    if baseline:
        write_demo_baseline(target)
    return accuracy


def ensure_demo_model(path: str | Path = DEMO_MODEL_PATH) -> Path:
    target = Path(path)
    if not target.is_file():
        train_demo_model(target)
    return target


def demo_events(loop: bool = False) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(key, event) pairs replaying the dataset in order, once or forever."""
    x, _, _ = demo_dataset()
    rows = x.tolist()
    while True:
        for i, row in enumerate(rows):
            ident = f"bc-{i:04d}"
            yield ident.encode(), {"id": ident, "features": row}
        if not loop:
            return
