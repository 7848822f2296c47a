"""The ``drift`` section (SPEC 5a): defaults, overrides, and refusals that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_infer.config import load_settings
from stream_infer.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(__import__("os").environ):
        if var.upper().startswith("STREAM_INFER_"):
            monkeypatch.delenv(var)


def test_drift_is_off_by_default_with_a_one_minute_window() -> None:
    s = load_settings()
    assert (s.drift.baseline, s.drift.window_s) == ("", 60.0)


def test_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("drift:\n  baseline: models/demo.baseline.json\n  window_s: 300\n")
    s = load_settings(path)
    assert (s.drift.baseline, s.drift.window_s) == ("models/demo.baseline.json", 300.0)
    monkeypatch.setenv("STREAM_INFER_DRIFT__WINDOW_S", "15")
    assert load_settings(path).drift.window_s == 15.0


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("drift:\n  window_s: 0\n", "drift.window_s: Input should be greater than 0"),
        ("drift:\n  window_s: -5\n", "drift.window_s"),
        ("drift:\n  window_s: 100000\n", "drift.window_s: Input should be less than or equal"),
        ("drift:\n  window: 60\n", "drift.window: unknown key"),
        ("drift:\n  baseline: [a]\n", "drift.baseline"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert words in str(info.value) and "\n" not in str(info.value)
