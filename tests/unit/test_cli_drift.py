"""``stream-infer drift baseline`` and ``stream-infer schema`` end to end, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from stream_infer.inference.baseline_file import load_baseline
from tests.cli import run_cli
from tests.models import loaded

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAM_INFER_")}
    return run_cli(*args, env={**env, "PYTHONPATH": str(ROOT)}, stdin=stdin)


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without the model's INFO log lines."""
    return [line for line in result.stderr.splitlines() if " INFO " not in line]


@pytest.fixture(scope="module")
def train_events() -> list[bytes]:
    from stream_infer.tools.demo import demo_split

    x_train = demo_split()[0]
    return [orjson.dumps({"id": i, "features": row}) for i, row in enumerate(x_train.tolist())]


def test_baseline_from_the_training_events_is_the_shipped_demo_baseline(
    tmp_path: Path, train_events: list[bytes]
) -> None:
    poison = [b"not json", b'{"features": [1, 2, 3]}', b'{"features": null}']
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"\n".join([poison[0], *train_events[:200], *poison[1:], *train_events[200:]])
    )
    out = tmp_path / "baseline.json"
    result = _cli("drift", "baseline", "--events", str(events), "--out", str(out))
    assert result.returncode == 0, result.stderr
    [line] = _errors(result)
    assert line.startswith(
        "skipped 3 events that do not fit the model (first: value is not valid JSON: "
    )
    assert result.stdout.strip() == (f"wrote {out}: 426 rows, 30 input features, 3 output values")
    # The command and the demo's own builder agree byte for byte (same rows, same decoder casts).
    from stream_infer.tools.demo import write_demo_baseline

    direct = write_demo_baseline(ROOT / "models" / "demo.onnx", tmp_path / "direct.json")
    assert out.read_bytes() == direct.read_bytes()
    load_baseline(out, loaded(ROOT / "models" / "demo.onnx"))


def test_baseline_reads_stdin(tmp_path: Path, train_events: list[bytes]) -> None:
    out = tmp_path / "from-stdin.json"
    result = _cli(
        "drift", "baseline", "--events", "-", "--out", str(out), "--bins", "4",
        stdin=b"\n".join(train_events[:150]) + b"\n\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "150 rows" in result.stdout
    doc = json.loads(out.read_text())
    assert doc["bins"] == 4 and len(doc["inputs"]["X"]["features"]["0"]["edges"]) == 3


def test_baseline_errors_are_one_line(tmp_path: Path, train_events: list[bytes]) -> None:
    few = tmp_path / "few.jsonl"
    few.write_bytes(b"\n".join([*train_events[:60], b'{"features": "x"}']))
    result = _cli("drift", "baseline", "--events", str(few), "--out", str(tmp_path / "b.json"))
    assert result.returncode == 1
    assert _errors(result) == [
        "stream-infer: error: only 60 of 61 events can be used (1 do not fit the model; first: "
        "features must be an array for input X float[30], not string); "
        "a drift baseline needs at least 100"
    ]
    assert not (tmp_path / "b.json").exists()
    missing = _cli("drift", "baseline", "--events", "/nonexistent.jsonl", "--out", "x.json")
    assert missing.returncode == 1
    assert _errors(missing) == [
        "stream-infer: error: cannot read /nonexistent.jsonl: No such file or directory"
    ]
    usage = _cli("drift", "baseline", "--events", str(few))
    assert usage.returncode == 2 and "--out" in usage.stderr


def test_schema_validates_the_demo_events_and_refuses_poison() -> None:
    result = _cli("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    from stream_infer.tools.demo import demo_events

    for _, event in list(demo_events())[:50]:
        assert validator.is_valid(json.loads(orjson.dumps(event)))
    for bad in (
        {"features": [1.0] * 29},
        {"features": [1.0] * 29 + ["1"]},
        {"features": [1.0] * 30, "id": 1.5},
        {"id": "no-features"},
    ):
        assert not validator.is_valid(bad), bad


def test_help() -> None:
    for args in (["drift", "--help"], ["drift", "baseline", "--help"], ["schema", "--help"]):
        result = _cli(*args)
        assert result.returncode == 0 and "Usage" in result.stdout, args
