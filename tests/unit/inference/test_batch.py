"""Narrowing an inference failure down to the rows that cause it (real onnxruntime errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from stream_infer.config import ModelSettings
from stream_infer.errors import InferenceError
from stream_infer.inference.batch import infer_batch, infer_rows, split_rows
from stream_infer.inference.codec import Decoder
from stream_infer.inference.envelope import Encoder
from stream_infer.inference.model import Model, load_model


class Stage:
    """The model and encoder as a runtime holds them."""

    def __init__(self, path: Path, warmup: bool = True) -> None:
        self.model: Model = load_model(ModelSettings(path=str(path), warmup=warmup), warmup_rows=4)
        self.encoder = Encoder("m", "1", self.model.signature.outputs)

    def _infer(self, rows):
        model = self.model
        return infer_rows(
            rows, lambda feeds, _n: model.predict(feeds), self.encoder.misaligned, model.batchable
        )


def _stage(path: Path, warmup: bool = True) -> tuple[Stage, Decoder]:
    stage = Stage(path, warmup)
    return stage, Decoder(stage.model.signature)


def _idx(*values: int) -> list[bytes]:
    return [orjson.dumps({"id": i, "features": [v]}) for i, v in enumerate(values)]


def test_bad_rows_are_isolated_and_good_rows_keep_their_order(gather_model: Path) -> None:
    stage, dec = _stage(gather_model)
    values = [1, 2, 99, 3, 4, 5, -50, 6, 7]
    rows = dec.decode(_idx(*values)).groups[0]
    done, failed = stage._infer(rows)
    assert sorted(i for i, _ in failed) == [2, 6]
    assert all("out of data bounds" in str(e) for _, e in failed)
    assert all(type(e.__cause__).__name__ == "InvalidArgument" for _, e in failed)
    produced = [i for part, _ in done for i in part.index]
    assert produced == [0, 1, 3, 4, 5, 7, 8]
    for part, outputs in done:
        expected = [[values[i] * 10.0] for i in part.index]
        assert outputs[0].tolist() == expected


def test_runs_needed_grow_with_bad_rows_not_batch_size(gather_model: Path) -> None:
    stage, dec = _stage(gather_model)
    calls = {"n": 0}
    real = stage.model.predict

    def counting(feeds):
        calls["n"] += 1
        return real(feeds)

    stage.model.predict = counting  # type: ignore[method-assign]
    values = [1] * 511 + [42]
    stage._infer(dec.decode(_idx(*values)).groups[0])
    assert calls["n"] <= 2 * 10 + 1  # a binary search, not 512 single runs


def test_fixed_batch_of_one_runs_every_row_alone(make_model) -> None:
    stage, dec = _stage(make_model("fixed_batch", 1))
    events = [orjson.dumps({"features": [i, -i, i]}) for i in range(5)]
    done, failed = stage._infer(dec.decode(events).groups[0])
    assert not failed
    assert [part.index for part, _ in done] == [[0], [1], [2], [3], [4]]
    assert [out[0].tolist() for _, out in done] == [[[i, 0, i]] for i in range(5)]


def test_a_broken_session_stops_the_worker_instead_of_dead_lettering(gather_model: Path) -> None:
    stage, dec = _stage(gather_model)
    # Make the known-good probe fail, as a lost GPU or corrupted session would.
    stage.model._probe_feed = {"idx": np.array([[99]], dtype=np.int64)}
    decoded = dec.decode(_idx(50, 60))
    with pytest.raises(InferenceError, match="known-good input as well"):
        infer_batch(stage.model, stage.encoder, [], decoded)


def test_split_rows_keeps_everything_aligned(linear_model: Path) -> None:
    _, dec = _stage(linear_model)
    rows = dec.decode([orjson.dumps({"id": i, "features": [i] * 4}) for i in range(5)]).groups[0]
    left, right = split_rows(rows, 2)
    assert (left.index, left.ids) == ([0, 1], [0, 1])
    assert (right.index, right.ids) == ([2, 3, 4], [2, 3, 4])
    assert right.feeds["x"][:, 0].tolist() == [2.0, 3.0, 4.0]


def test_every_row_of_a_batch_ends_in_exactly_one_place(gather_model: Path) -> None:
    from tests.records import Record

    stage, dec = _stage(gather_model)
    values = [orjson.dumps({"id": i, "features": [i % 10]}) for i in range(10)]
    values[3] = b"not json"
    values[5] = orjson.dumps({"id": 5, "features": [99]})  # fails inside onnxruntime
    records = [Record(offset_=i, value_=v) for i, v in enumerate(values)]
    outcome = infer_batch(stage.model, stage.encoder, records, dec.decode(values))
    predicted = [i for index, _ in outcome.predictions for i in index]
    assert [i for i, _ in outcome.rejects] == [3]
    assert [i for i, _ in outcome.failures] == [5]
    assert sorted(predicted) == [0, 1, 2, 4, 6, 7, 8, 9]
    payloads = {i: p for index, ps in outcome.predictions for i, p in zip(index, ps, strict=True)}
    assert orjson.loads(payloads[7])["outputs"]["value"] == [70.0]
    assert orjson.loads(payloads[7])["source"]["offset"] == 7
