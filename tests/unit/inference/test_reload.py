"""Hot reload on real files: a replacement is loaded, checked and switched to, or refused."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from stream_infer.config import ModelSettings
from stream_infer.inference.model import Model
from stream_infer.inference.reload import Reloader
from stream_infer.inference.variants import Variant
from tests import models


def _replace(source: Path, target: Path) -> None:
    """Atomic replacement, as the README tells operators to do it."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


class Harness:
    def __init__(self, path: Path, **settings: Any) -> None:
        self.settings = ModelSettings(path=str(path), version="1", warmup=False, **settings)
        model = models.loaded(path)
        self.served = Variant.of("primary", model, "m", "1")
        self.results: list[str] = []
        self.extras: list[Any] = []
        self.reloader = Reloader(
            self.settings, 8, lambda: self.served, self.switch, on_result=self.results.append
        )

    def switch(self, new: Variant, extra: Any) -> None:
        self.served = new
        self.extras.append(extra)


def test_a_replaced_file_is_switched_to_with_its_own_version(tmp_path: Path) -> None:
    path = models.linear(tmp_path / "model.onnx")
    h = Harness(path)
    assert h.reloader.poll() is None  # nothing changed yet
    _replace(models.linear(tmp_path / "v2.onnx", seed=8, version="2"), path)
    assert h.reloader.poll() is True
    assert (h.served.version, h.results) == ("2", ["ok"])
    assert h.served.encoder is not None and h.served.model.path == path
    assert h.reloader.poll() is None  # the same file is not loaded twice


def test_a_file_without_a_version_answers_with_the_configured_one(tmp_path: Path) -> None:
    path = models.linear(tmp_path / "model.onnx", version="1")
    h = Harness(path)
    _replace(models.linear(tmp_path / "plain.onnx", seed=8), path)
    assert h.reloader.poll() is True
    assert h.served.version == "1"


def test_corrupt_and_incompatible_files_are_refused_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = models.linear(tmp_path / "model.onnx")
    h = Harness(path)
    before = h.served
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    caplog.set_level(logging.INFO)
    _replace(garbage, path)
    assert h.reloader.poll() is False
    assert h.reloader.poll() is None  # refused once, not again until it changes
    _replace(models.linear(tmp_path / "wide.onnx", n_features=5, version="3"), path)
    assert h.reloader.poll() is False
    assert h.served is before and h.results == ["refused", "refused"]
    refusals = [r.getMessage() for r in caplog.records if "hot reload refused" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert "is not a valid ONNX model" in refusals[0]
    assert refusals[0].endswith("; still serving m v1")
    assert "input x float[5] differs from the served x float[4]; still serving m v1" in refusals[1]
    _replace(models.linear(tmp_path / "good.onnx", seed=8, version="4"), path)
    assert h.reloader.poll() is True and h.served.version == "4"


def test_changed_outputs_need_reload_outputs_any(tmp_path: Path) -> None:
    from onnx import TensorProto

    path = models.typed(tmp_path / "model.onnx", TensorProto.FLOAT, "x", 4)
    renamed = models.linear(tmp_path / "linear.onnx", version="2")  # outputs scores, best
    strict = Harness(path)
    _replace(renamed, path)
    assert strict.reloader.poll() is False
    path2 = models.typed(tmp_path / "model2.onnx", TensorProto.FLOAT, "x", 4)
    lenient = Harness(path2, reload_outputs="any")
    _replace(renamed, path2)
    assert lenient.reloader.poll() is True
    assert lenient.served.model.signature.outputs == ("scores", "best")


def test_a_check_can_refuse_and_its_result_reaches_the_switch(tmp_path: Path) -> None:
    path = models.linear(tmp_path / "model.onnx")
    h = Harness(path)
    verdicts = iter([ValueError("drift baseline was built for another model file"), "monitor"])

    def check(model: Model) -> Any:
        verdict = next(verdicts)
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    h.reloader = Reloader(
        h.settings, 8, lambda: h.served, h.switch, check=check, on_result=h.results.append
    )
    _replace(models.linear(tmp_path / "v2.onnx", seed=8, version="2"), path)
    assert h.reloader.poll() is False
    _replace(models.linear(tmp_path / "v3.onnx", seed=9, version="3"), path)
    assert h.reloader.poll() is True
    assert h.extras == ["monitor"] and h.served.version == "3"
