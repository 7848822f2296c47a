"""Drift baselines: what they hold, the file format, and every way a file can be refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from stream_infer.errors import DriftError
from stream_infer.inference.baseline import build_baseline
from stream_infer.inference.baseline_file import baseline_bytes, load_baseline, save_baseline
from stream_infer.inference.drift import DriftMonitor
from stream_infer.inference.model import Model
from tests.models import loaded

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(1000, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def linear_baseline(linear: Model, reference: np.ndarray):
    return build_baseline(linear, [{"x": reference[:600]}, {"x": reference[600:]}], name="lin")


def test_every_input_feature_and_output_value_is_binned(linear, reference, linear_baseline) -> None:
    b = linear_baseline
    assert b.rows == 1000 and b.bins == 10
    assert list(b.inputs) == ["x"] and list(b.outputs) == ["scores", "best"]
    assert [len(t.columns) for t in (b.inputs["x"], b.outputs["scores"], b.outputs["best"])] == [
        4,
        3,
        1,
    ]
    for col in b.inputs["x"].columns:
        assert len(col.edges) == 9 and col.counts.sum() == 1000
    # The argmax output is categorical: one bin per class, counted as numpy counts it.
    best = linear.predict({"x": reference})[1]
    classes, counts = np.unique(best, return_counts=True)
    col = b.outputs["best"].columns[0]
    assert col.edges.tolist() == classes[:-1].astype(float).tolist()
    assert col.counts.tolist() == counts.tolist()
    x0 = reference[:, 0].astype(np.float64)
    assert b.inputs["x"].columns[0].mean == pytest.approx(x0.mean(), rel=1e-5)
    assert b.inputs["x"].columns[0].std == pytest.approx(x0.std(), rel=1e-5)
    assert b.model.name == "lin" and len(b.model.sha256) == 64


def test_save_and_load_round_trip(tmp_path: Path, linear, linear_baseline) -> None:
    path = tmp_path / "b.json"
    save_baseline(linear_baseline, path)
    again = load_baseline(path, linear)
    assert baseline_bytes(again) == path.read_bytes()
    for name, stats in linear_baseline.inputs.items():
        for a, b in zip(stats.columns, again.inputs[name].columns, strict=True):
            assert a.edges.tolist() == b.edges.tolist() and a.counts.tolist() == b.counts.tolist()
    doc = json.loads(path.read_text())
    assert doc["format"] == 1 and doc["model"]["outputs"] == ["scores", "best"]
    assert doc["inputs"]["x"]["features"]["0"]["shares"][0] == pytest.approx(0.1, abs=0.01)
    # One line per feature: reviewable in a diff.
    assert sum('"edges"' in line for line in path.read_text().splitlines()) == 4 + 3 + 1


def _tamper(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _unsorted_edges(doc):
    doc["inputs"]["x"]["features"]["1"].update(edges=[2.0, 1.0], counts=[500, 250, 250])


def _drop_rows(doc):
    del doc["rows"]


def _set(*keys, value):
    def edit(doc):
        node = doc
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_set("format", value=2), "has format 2; this stream-infer reads format 1"),
        (_drop_rows, "is malformed: rows: Field required"),
        (_set("rows", value=999), "counts must be non-negative and add up to rows (999)"),
        (_unsorted_edges, "inputs.x.1: edges must be finite and strictly increasing"),
        (
            _set("inputs", "x", "features", "1", "counts", value=[1000]),
            "inputs.x.1: 9 edges need 10 counts",
        ),
        (_set("inputs", "x", "shape", value=[5]), "inputs.x: not an input of shape [5]"),
        (_set("outputs", "nope", value={"dtype": "float32", "shape": [], "values": {}}), "nope"),
        (_set("inputs", "x", "dtype", value="str"), "is not a numeric type"),
        (_set("model", "sha256", value="xyz"), "model.sha256"),
        (_set("surprise", value=1), "surprise: Extra inputs are not permitted"),
    ],
)
def test_malformed_files_are_one_clear_line(tmp_path, linear_baseline, edit, words) -> None:
    path = tmp_path / "b.json"
    save_baseline(linear_baseline, path)
    _tamper(path, edit)
    with pytest.raises(DriftError) as info:
        load_baseline(path)
    message = str(info.value)
    assert words in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "file not found"),
        (b"", "is not valid JSON"),
        (b"{not json", "is not valid JSON"),
        (b"[1, 2]", "must hold a JSON object"),
        (b'{"format": "1"}', "has format '1'"),
    ],
)
def test_unreadable_files(tmp_path: Path, content, words) -> None:
    path = tmp_path / "b.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DriftError, match="drift baseline") as info:
        load_baseline(path)
    assert words in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DriftError, match="is a directory"):
        load_baseline(tmp_path)


def test_a_baseline_for_another_model_is_refused(
    tmp_path, linear_baseline, multi_model, linear_model
) -> None:
    path = tmp_path / "b.json"
    save_baseline(linear_baseline, path)
    with pytest.raises(DriftError) as info:
        load_baseline(path, loaded(multi_model))
    assert "was built for a model with inputs x float[4]; this model has a float[3]" in str(
        info.value
    )
    assert "stream-infer drift baseline" in str(info.value)
    # Same signature, different bytes (a retrained model): refused as well.
    proto = onnx.load(str(linear_model))
    proto.doc_string = "retrained"
    other = tmp_path / "retrained.onnx"
    onnx.save(proto, str(other))
    with pytest.raises(DriftError, match="was built for another model file"):
        load_baseline(path, loaded(other))
    # Another output set.
    from tests.models import linear as build_linear

    wider = loaded(build_linear(tmp_path / "wide.onnx", n_out=5))
    assert wider.signature.outputs == ("scores", "best")  # same names: caught by the digest
    with pytest.raises(DriftError, match="another model file"):
        load_baseline(path, wider)


def test_untrackable_inputs_and_outputs_are_listed_as_skipped(
    make_model, dynamic_model, tmp_path
) -> None:
    strings = loaded(make_model("typed", TensorProto.STRING))
    b = build_baseline(strings, [{"v": np.full((200, 3), "a", dtype=object)}])
    assert b.inputs == {} and b.outputs == {}
    assert "strings" in b.skipped_inputs["v"] and "string" in b.skipped_outputs["out"]
    dynamic = loaded(dynamic_model)
    b = build_baseline(
        dynamic,
        [{"seq": np.ones((100, 3), np.float32)}, {"seq": np.ones((100, 5), np.float32)}],
    )
    assert "dynamic axis" in b.skipped_inputs["seq"]
    assert b.outputs["total"].columns[0].counts.tolist() == [100, 100]  # sums 3 and 5
    save_baseline(b, tmp_path / "d.json")
    assert load_baseline(tmp_path / "d.json", dynamic).skipped_inputs == b.skipped_inputs


def test_zipmap_outputs_are_skipped(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from stream_infer.tools.demo import demo_split

    x_train, _, y_train, _ = demo_split()
    clf = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    onx = to_onnx(clf, x_train[:1].astype(np.float32), target_opset=17)  # ZipMap on
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(onx.SerializeToString())
    model = loaded(path)
    b = build_baseline(model, [{"X": x_train.astype(np.float32)}])
    [(name, why)] = b.skipped_outputs.items()
    assert "ZipMap" in why and name in model.signature.outputs
    assert len(b.outputs) == 1  # the label is still tracked
    monitor = DriftMonitor(b, 60)
    feeds = {"X": x_train[:50].astype(np.float32)}
    monitor.observe(feeds, model.predict(feeds), now=1.0)
    assert monitor.snapshot(1.0).mismatched == 0


def test_too_few_rows_is_an_error(linear, reference) -> None:
    with pytest.raises(DriftError, match="needs at least 100 rows that fit the model, got 99"):
        build_baseline(linear, [{"x": reference[:99]}])
    with pytest.raises(DriftError, match="bins must be between 2 and 1000"):
        build_baseline(linear, [{"x": reference}], bins=1)


def test_the_shipped_demo_baseline_fits_the_shipped_model_and_is_current(tmp_path) -> None:
    from stream_infer.tools.demo import write_demo_baseline

    shipped = ROOT / "models" / "demo.baseline.json"
    model = loaded(ROOT / "models" / "demo.onnx")
    baseline = load_baseline(shipped, model)
    assert baseline.rows == 426  # the training split (75% of 569)
    assert len(baseline.inputs["X"].columns) == 30
    rebuilt = load_baseline(
        write_demo_baseline(ROOT / "models" / "demo.onnx", tmp_path / "again.json"), model
    )
    hint = "stale: rebuild models/demo.baseline.json with write_demo_baseline()"
    assert rebuilt.model == baseline.model and rebuilt.rows == baseline.rows, hint
    for a, b in zip(rebuilt.inputs["X"].columns, baseline.inputs["X"].columns, strict=True):
        assert a.edges.tolist() == b.edges.tolist() and a.counts.tolist() == b.counts.tolist(), hint
    # Outputs come from onnxruntime, whose last bits may differ on another CPU: near enough.
    for name, stats in baseline.outputs.items():
        for a, b in zip(rebuilt.outputs[name].columns, stats.columns, strict=True):
            np.testing.assert_allclose(a.edges, b.edges, rtol=1e-4, atol=1e-6, err_msg=hint)
            np.testing.assert_allclose(a.counts, b.counts, atol=2, err_msg=hint)


def test_training_the_demo_writes_its_baseline_beside_it(demo_model: Path) -> None:
    beside = demo_model.with_suffix(".baseline.json")
    assert beside.is_file()
    load_baseline(beside, loaded(demo_model))
