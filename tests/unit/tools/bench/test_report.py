"""Aggregation, targets, the markdown and the plot from hand-made runs; the profile summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_infer.tools.bench.harness import RunResult
from stream_infer.tools.bench.latency import LatencyStep
from stream_infer.tools.bench.profile import summarize_speedscope
from stream_infer.tools.bench.report import aggregate, render_markdown, write_plot
from stream_infer.tools.bench.stats import LatencySummary

MACHINE = {
    "cpu": "Test CPU", "logical_cpus": 2, "physical_cores": 2, "memory_gib": 8.0,
    "os": "Linux", "python": "3.11", "confluent_kafka": "2", "librdkafka": "2",
    "onnxruntime": "onnxruntime 1", "numpy": "2", "orjson": "3", "faust_streaming": "0.15",
    "aiokafka": "0.14", "broker": "test broker",
}  # fmt: skip


def _runs() -> list[RunResult]:
    return [
        RunResult(
            "stream-infer",
            0,
            1000,
            rate=60.0,
            cpu_per_million=10.0,
            broker_cpu_per_million=3.0,
            peak_rss=100 * 2**20,
            load_avg=1.5,
        ),
        RunResult(
            "stream-infer",
            1,
            1000,
            rate=66.0,
            cpu_per_million=12.0,
            broker_cpu_per_million=5.0,
            peak_rss=110 * 2**20,
        ),
        RunResult("bare", 0, 1000, rate=100.0, cpu_per_million=2.0, peak_rss=50 * 2**20),
        RunResult("bare", 1, 1000, error="exited with code 1: boom"),
        RunResult("tutorial", 0, 200, rate=3.0, cpu_per_million=900.0, peak_rss=80 * 2**20),
        RunResult("ort", 0, 1000, rate=6300.0, cpu_per_million=0.1, peak_rss=200 * 2**20),
    ]


def _doc() -> dict:
    names = ["stream-infer", "bare", "tutorial", "ort"]
    step = LatencyStep("stream-infer", 0.5, 31.5, sent=100, received=100, delivered=31.0)
    step.summary = LatencySummary.of_micros([10_000] * 98 + [50_000, 90_000])
    doc = aggregate(names, _runs(), [step])
    doc.update(
        date="2026-01-01",
        command="stream-infer bench --test",
        machine=MACHINE,
        model={"name": "tabular", "description": "a test model"},
        settings={"events": 1000, "repeats": 2, "partitions": 6, "loads": [0.5, 0.8],
                  "latency_s": 10.0, "settle_s": 3.0},
    )  # fmt: skip
    return doc


def test_aggregate_spreads_ratios_and_targets() -> None:
    doc = _doc()
    si = doc["contenders"]["stream-infer"]
    assert si["throughput"]["mean"] == 63.0
    assert (si["throughput"]["min"], si["throughput"]["max"]) == (60.0, 66.0)
    assert si["cpu_s_per_million"]["mean"] == 11.0
    assert si["broker_cpu_s_per_million"]["mean"] == 4.0
    assert doc["contenders"]["bare"]["broker_cpu_s_per_million"]["n"] == 0  # not measured
    assert si["peak_rss_mib"]["mean"] == 105.0
    assert doc["contenders"]["bare"]["throughput"]["n"] == 1  # the failed run is left out
    assert doc["ratios"]["stream-infer"]["bare"] == pytest.approx(0.63)
    assert doc["ratios"]["bare"]["stream-infer"] == pytest.approx(1 / 0.63)
    targets = {t["versus"]: t for t in doc["targets"]}
    assert targets["bare"]["status"] == "met"  # 63 / 100 >= 0.6
    assert targets["tutorial"]["status"] == "not met"  # 63 / 3 = 21 < 30
    assert targets["ort"]["status"] == "n/a: the model does not dominate (ort alone is 100x)"
    assert "faust-batched" not in targets  # not in this run


def test_markdown_shows_the_figures_ratios_and_failures() -> None:
    text = render_markdown(_doc())
    assert "| stream-infer | 1,000 | 63 | 60 - 66 | 1x | 11.0 | 4.0 | 105 |" in text
    assert "| bare | 1,000 | 100 | 100 - 100 | 1.59x | 2.0 | - | 50 |" in text
    assert "| stream-infer | 50% | 32 | 10.0 | 50.0 | 90.0 | 90.0 | 100 |" in text
    assert "- bare, round 1: exited with code 1: boom" in text
    assert "Machine: Test CPU, 2 logical CPUs" in text
    assert "1-minute load average was 1.5 to 1.5" in text


def test_plot_is_a_png(tmp_path: Path) -> None:
    out = tmp_path / "bench.png"
    write_plot(_doc(), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_summary_counts_own_and_total_time(tmp_path: Path) -> None:
    frames = [
        {"name": "run", "file": "/x/site-packages/stream_infer/runtimes/worker.py", "line": 1},
        {"name": "decode", "file": "/x/stream_infer/inference/codec.py", "line": 2},
        {"name": "produce", "file": "/x/stream_infer/kafka/producer.py", "line": 3},
    ]
    profiles = [
        {"type": "sampled", "name": "MainThread", "samples": [[0, 1], [0, 1], [0, 2]],
         "weights": [1, 1, 1]},
        {"type": "sampled", "name": "inference", "samples": [[2]], "weights": [1]},
    ]  # fmt: skip
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"shared": {"frames": frames}, "profiles": profiles}))
    text = summarize_speedscope(path)
    assert "4 samples" in text
    assert "| MainThread | 3 | 75.0% |" in text
    own = text.split("by own time")[1].split("by total time")[0]
    total = text.split("by total time")[1]
    assert "| `decode (stream_infer/inference/codec.py)` | 50.0% |" in own
    assert "| `produce (stream_infer/kafka/producer.py)` | 50.0% |" in own
    assert "run (" not in own  # never on top of a stack
    assert "| `run (stream_infer/runtimes/worker.py)` | 75.0% |" in total
