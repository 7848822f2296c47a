"""Configuration of hot reload, shadow and canary: validated like every other section."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_infer.config import load_settings
from stream_infer.errors import ConfigError

CANARY = "model:\n  canary: "
SHADOW = "model:\n  shadow: "
CASES = [
    (
        CANARY + "{path: c.onnx, share: 0}\n",
        "model.canary.share: must be in (0, 1]: the share of keys the canary answers (got 0)",
    ),
    (CANARY + "{path: c.onnx, share: 2}\n", "model.canary.share: must be in (0, 1]"),
    (CANARY + "{path: c.onnx}\n", "model.canary.share: Field required"),
    (CANARY + "{path: c.onnx, share: 0.1, shares: 1}\n", "model.canary.shares: unknown key"),
    (SHADOW + "{path: s.onnx}\n", "model.shadow.topic: Field required"),
    (
        SHADOW + "{path: s.onnx, topic: predictions}\n",
        "model.shadow.topic 'predictions' is also topics.output",
    ),
    (
        SHADOW + "{path: s.onnx, topic: events}\n",
        "model.shadow.topic 'events' is also an input topic",
    ),
    (
        "model:\n  reload_interval_s: -1\n",
        "model.reload_interval_s: Input should be greater than or equal to 0",
    ),
    ("model:\n  reload_outputs: some\n", "model.reload_outputs: Input should be 'same' or 'any'"),
]


@pytest.mark.parametrize(("text", "message"), CASES)
def test_bad_model_operations_settings_name_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_defaults_and_a_full_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model:\n"
        "  reload_interval_s: 0.5\n"
        "  shadow: {path: s.onnx, topic: predictions.shadow, version: 7}\n"
        "  canary: {path: c.onnx, share: 0.25, version: 2}\n"
    )
    s = load_settings(path)
    assert s.model.reload_interval_s == 0.5 and s.model.reload_outputs == "same"
    assert s.model.shadow is not None and s.model.shadow.version == "7"
    assert s.model.shadow.topic == "predictions.shadow" and s.model.shadow.name is None
    canary = s.model.canary
    assert canary is not None and (canary.share, canary.version) == (0.25, "2")
    plain = load_settings(None)
    assert plain.model.reload_interval_s == 2.0
    assert plain.model.shadow is None and plain.model.canary is None
