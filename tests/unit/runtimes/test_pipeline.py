"""Several batches in the model at once (``model.concurrent_batches``), outputs still in order.

The model is real (onnxruntime); the deliveries are a recorder of what the stage hands
on, since what is checked here is the order and the overlap, not Kafka's behaviour.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_infer.config import ModelSettings
from stream_infer.errors import ModelError
from stream_infer.inference.codec import Decoder
from stream_infer.inference.envelope import Encoder
from stream_infer.inference.model import CPU, Model, lanes_for, load_model
from stream_infer.kafka.offsets import Batch
from stream_infer.runtimes.pipeline import InferenceStage
from tests.records import Record

_WAIT_S = 10.0  # far above what a call takes: reaching it means the calls did not overlap


class Recorder:
    """Stands where ``Deliveries`` does: notes which batch produced which rows, in order."""

    def __init__(self) -> None:
        self.model_version = ""
        self.produced: list[tuple[int, list[int]]] = []

    def predictions_for(self, batch: Batch, index: Any, payloads: list[bytes]) -> None:
        rows = [orjson.loads(p)["id"] for p in payloads]
        self.produced.append((batch.seq, rows))

    def dead_letter(self, batch: Batch, i: int, stage: str, exc: BaseException) -> None:
        raise AssertionError(f"unexpected dead letter: {stage}: {exc}")


def _model(path: Path, lanes: int) -> Model:
    settings = ModelSettings(path=str(path), warmup=False, concurrent_batches=lanes)
    return load_model(settings, concurrent=True)


def _batch(seq: int, first_id: int, value: float, rows: int = 3) -> Batch:
    records = [
        Record(
            offset_=first_id + i, value_=orjson.dumps({"id": first_id + i, "features": [value] * 4})
        )
        for i in range(rows)
    ]
    return Batch(seq, records)


def _running(
    model: Model, predict: Callable[[dict[str, Any]], list[Any]], lanes: int
) -> tuple[InferenceStage, Recorder, Callable[..., None]]:
    """A started stage whose model calls go through ``predict``; its recorder; a submitter."""
    model.predict = predict  # type: ignore[method-assign, assignment]
    recorder = Recorder()
    encoder = Encoder("m", "1", model.signature.outputs)
    stage = InferenceStage(model, encoder, recorder, lanes=lanes)  # type: ignore[arg-type]
    stage.start()
    decoder = Decoder(model.signature)

    def submit(*batches: Batch) -> None:
        for batch in batches:
            stage.submit(batch, decoder.decode([r.value() for r in batch.records]))

    return stage, recorder, submit


def test_a_later_batch_can_finish_the_model_first_but_produces_second(linear_model: Path) -> None:
    model = _model(linear_model, 2)
    assert model.lanes == 2
    real, second_done, order = model.predict, threading.Event(), []

    def predict(feeds: dict[str, Any]) -> list[Any]:
        first = float(feeds["x"][0, 0]) == 1.0
        if first:  # batch 1 stays in the model until batch 2 has been through it
            assert second_done.wait(_WAIT_S), "batch 2 never ran beside batch 1"
        out = real(feeds)
        order.append(1 if first else 2)
        if not first:
            second_done.set()
        return out

    stage, recorder, submit = _running(model, predict, 2)
    submit(_batch(1, 0, 1.0), _batch(2, 10, 2.0))
    assert stage.wait_idle(_WAIT_S * 2)
    stage.stop(5)
    assert stage.failure is None
    assert order == [2, 1]  # the model finished batch 2 first...
    assert recorder.produced == [(1, [0, 1, 2]), (2, [10, 11, 12])]  # ...its outputs left second


def test_a_failed_batch_ends_its_turn_and_nothing_after_it_is_produced(
    linear_model: Path,
) -> None:
    model = _model(linear_model, 2)
    real = model.predict

    def predict(feeds: dict[str, Any]) -> list[Any]:
        if float(feeds["x"][0, 0]) == 1.0:
            raise RuntimeError("device lost")  # not a row's fault: the stage must stop
        return real(feeds)

    stage, recorder, submit = _running(model, predict, 2)
    submit(_batch(1, 0, 1.0), _batch(2, 10, 2.0), _batch(3, 20, 3.0))
    _all_turns_end(stage)  # nothing waits for the failed one's turn
    assert isinstance(stage.failure, RuntimeError)
    assert recorder.produced == []


def _all_turns_end(stage: InferenceStage) -> None:
    """Every submitted batch ended its turn, and every lane ends on stop."""
    deadline = time.monotonic() + _WAIT_S
    while stage.outstanding:
        assert time.monotonic() < deadline, f"{stage.outstanding} turns never ended"
        time.sleep(0.01)
    stage.stop(5)
    assert not any(t.is_alive() for t in stage._threads)


def test_batches_in_the_model_when_the_shutdown_comes_produce_and_later_ones_skip(
    linear_model: Path,
) -> None:
    model = _model(linear_model, 2)
    real, second_done, release = model.predict, threading.Event(), threading.Event()

    def predict(feeds: dict[str, Any]) -> list[Any]:
        if float(feeds["x"][0, 0]) == 1.0:  # batch 1: runs, then waits for the shutdown
            out = real(feeds)
            assert release.wait(_WAIT_S)
            return out
        out = real(feeds)  # batch 2: inferred by the other lane before the shutdown
        second_done.set()
        return out

    stage, recorder, submit = _running(model, predict, 2)
    submit(_batch(1, 0, 1.0), _batch(2, 10, 2.0))
    assert second_done.wait(_WAIT_S)
    stage.discard_queued()  # the worker's shutdown deadline passed
    submit(_batch(3, 20, 3.0))  # never started
    release.set()
    _all_turns_end(stage)
    # Batch 1 was in the model before the shutdown and produces; batch 3 is skipped. Batch 2
    # ran too, and produces in its turn: only batches after a skipped one are dropped.
    assert [seq for seq, _ in recorder.produced] == [1, 2]


def test_after_a_skipped_batch_nothing_later_is_produced(linear_model: Path) -> None:
    model = _model(linear_model, 2)
    real, first_started, go = model.predict, threading.Event(), threading.Event()

    def predict(feeds: dict[str, Any]) -> list[Any]:
        first_started.set()
        assert go.wait(_WAIT_S)
        return real(feeds)

    stage, recorder, submit = _running(model, predict, 2)
    submit(_batch(1, 0, 1.0))
    assert first_started.wait(_WAIT_S)  # batch 1 holds one lane in the model
    stage.discard_queued()
    # Batch 2 starts after the shutdown began: skipped, in its turn, after batch 1.
    submit(_batch(2, 10, 2.0))
    go.set()
    _all_turns_end(stage)
    assert [seq for seq, _ in recorder.produced] == [1]


def test_one_lane_runs_batches_one_after_the_other(linear_model: Path) -> None:
    model = _model(linear_model, 1)
    real, running, overlapped = model.predict, [0], []

    def predict(feeds: dict[str, Any]) -> list[Any]:
        running[0] += 1
        overlapped.append(running[0] > 1)
        try:
            return real(feeds)
        finally:
            running[0] -= 1

    stage, recorder, submit = _running(model, predict, model.lanes)
    submit(*[_batch(seq, seq * 10, float(seq)) for seq in range(1, 6)])
    assert stage.wait_idle(_WAIT_S)
    stage.stop(5)
    assert overlapped == [False] * 5
    assert [seq for seq, _ in recorder.produced] == [1, 2, 3, 4, 5]


def test_lanes_auto_uses_two_on_the_cpu_and_one_with_io_binding(linear_model: Path) -> None:
    auto = ModelSettings(path=str(linear_model))
    assert lanes_for(auto, CPU) in (1, 2)  # 1 only on a one-core machine
    bound = ModelSettings(path=str(linear_model), io_binding="on")
    assert lanes_for(bound, CPU) == 1
    assert lanes_for(ModelSettings(path=str(linear_model), concurrent_batches=3), CPU) == 3
    # Only the native worker's stage overlaps calls; every other user loads one lane.
    assert load_model(ModelSettings(path=str(linear_model), warmup=False)).lanes == 1


def test_explicit_lanes_with_io_binding_is_a_clear_error(linear_model: Path) -> None:
    settings = ModelSettings(
        path=str(linear_model), warmup=False, io_binding="on", concurrent_batches=2
    )
    with pytest.raises(ModelError, match="concurrent_batches=2 cannot run with IO binding"):
        load_model(settings, concurrent=True)


@pytest.mark.parametrize("value", [0, 65, "two"])
def test_concurrent_batches_out_of_range_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="concurrent_batches"):
        ModelSettings.model_validate({"concurrent_batches": value})


_PINNED = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from stream_infer.config import ModelSettings
from stream_infer.inference.model import load_model
model = load_model(ModelSettings(path=sys.argv[1], warmup=False), concurrent=True)
print(model.lanes, model._session.get_session_options().intra_op_num_threads)
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity (Linux) and at least two usable CPUs to pin to one",
)
def test_pinned_to_one_core_the_model_runs_one_lane_of_one_thread(linear_model: Path) -> None:
    # onnxruntime's default counts the machine's cores, not the process's: two threads
    # on one core. The worker sizes the pool from the cores it may use.
    ran = subprocess.run(
        [sys.executable, "-c", _PINNED, str(linear_model)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == ["1", "1"]
