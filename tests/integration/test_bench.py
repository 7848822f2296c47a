"""``stream-infer bench`` end to end on the real broker: figures, ratios, table, JSON, plot."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_infer", "bench", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def test_quick_bench_writes_sane_figures(kafka: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    ran = _bench(
        "--quick", "--contenders", "stream-infer,stream-infer-2p,bare,ort", "--events", "3000",
        "--bootstrap", kafka, "--out", str(out), "--warmup", "0.1",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    # One untimed run of the worker warmed the broker first, and is in no figure.
    warm = doc["settings"]["warmup_runs_per_s"]
    assert len(warm) == 1 and warm[0] > 0
    # So did one untimed latency step of the first latency contender.
    untimed = doc["settings"]["warmup_latency_step"]
    assert untimed["contender"] == "stream-infer" and untimed["received"] == untimed["sent"] > 0
    assert [r["round"] for r in doc["contenders"]["stream-infer"]["runs"]] == [0]
    per = doc["contenders"]
    assert list(per) == ["stream-infer", "stream-infer-2p", "bare", "ort"]
    for name, c in per.items():
        t = c["throughput"]
        assert t["n"] == 1 and t["mean"] > 0 and t["min"] <= t["mean"] <= t["max"], name
        # A few thousand events can pass in less CPU than the kernel's 10 ms ticks can
        # show: such a figure is left out (null), never written as 0.
        cpu = c["cpu_s_per_million"]["mean"]
        assert cpu is None or cpu > 0, name
        assert c["peak_rss_mib"]["mean"] > 10, name  # a Python process with its libraries
        assert c["runs"][0]["error"] is None, name
    assert per["stream-infer"]["events"] == per["bare"]["events"] == 3000
    # Two processes: the figures are the whole tree's, so at least one worker's memory each.
    assert (
        per["stream-infer-2p"]["peak_rss_mib"]["mean"] > per["stream-infer"]["peak_rss_mib"]["mean"]
    )
    # The model alone is faster than any pipeline around it.
    assert per["ort"]["throughput"]["mean"] > per["stream-infer"]["throughput"]["mean"]

    means = {n: c["throughput"]["mean"] for n, c in per.items()}
    for a in means:
        for b in means:
            assert doc["ratios"][a][b] == pytest.approx(means[a] / means[b]), (a, b)

    # --quick measures latency for stream-infer (one process and two) and bare, at 50% and
    # 80% of their rates; the two processes' steps start once both are members.
    for name in ("stream-infer", "stream-infer-2p", "bare"):
        steps = per[name]["latency"]
        assert [s["load"] for s in steps] == [0.5, 0.8], name
        for s in steps:
            assert s["error"] is None, s
            assert s["offered_per_s"] == pytest.approx(s["load"] * means[name])
            assert s["received"] == s["sent"] > 0
            assert 0 < s["count"] <= s["sent"]
            assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["p999_ms"] <= s["max_ms"]
    assert per["ort"]["latency"] == []  # no Kafka, no latency

    text = (out / "results.md").read_text()
    assert ran.stdout == text  # the table is also the command's output
    si = f"| stream-infer | 3,000 | {means['stream-infer']:,.0f} |"
    assert si in text
    bare_vs = doc["ratios"]["bare"]["stream-infer"]
    assert f"| bare | 3,000 | {means['bare']:,.0f} |" in text
    assert f"{bare_vs:.3g}x" in text.split("| bare | 3,000 |")[1].splitlines()[0]
    assert doc["machine"]["librdkafka"] and doc["machine"]["logical_cpus"]
    assert not math.isnan(doc["targets"][0]["ratio"])
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bad_options_are_one_line(tmp_path: Path) -> None:
    ran = _bench("--contenders", "stream-infer,nope", "--out", str(tmp_path), timeout=30)
    assert ran.returncode == 2
    assert ran.stderr.strip() == (
        "stream-infer: usage error: --contenders: unknown contender nope (known: stream-infer, "
        "stream-infer-eos, stream-infer-2p, stream-infer-faust, bare, tutorial, hand-batched, "
        "faust-batched, faust-echo, ort)"
    )
    ran = _bench("--model", str(tmp_path / "missing.onnx"), "--bootstrap", "127.0.0.1:1",
                 "--out", str(tmp_path / "out"), timeout=30)  # fmt: skip
    assert ran.returncode == 1
    assert ran.stderr.strip() == (
        f"stream-infer: error: --model: {tmp_path / 'missing.onnx'} is neither a file nor a "
        "built-in model (tabular, heavy)"
    )
    assert list(tmp_path.iterdir()) == []  # no results folder for a run that never started
    ran = _bench("--contender-cpus", "1,x", "--out", str(tmp_path / "out"), timeout=30)
    assert ran.returncode == 2
    assert ran.stderr.strip() == (
        "stream-infer: usage error: --contender-cpus: expected CPU numbers separated by "
        "commas, got '1,x'"
    )
    everything = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    ran = _bench("--contender-cpus", everything, "--out", str(tmp_path / "out"), timeout=30)
    assert ran.returncode == 1
    assert ran.stderr.strip() == (
        "stream-infer: error: --contender-cpus: leave at least one CPU for the broker and "
        "the harness"
    )
    ran = _bench("--contender-cpus", "4096", "--out", str(tmp_path / "out"), timeout=30)
    assert ran.returncode == 1
    assert "--contender-cpus: CPU(s) 4096 are not among this process's" in ran.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs: one for the contenders"
)
def test_contenders_pinned_apart_from_the_harness(kafka: str, tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    out = tmp_path / "results"
    ran = _bench(
        "--quick", "--contenders", "bare,ort", "--events", "2000", "--bootstrap", kafka,
        "--out", str(out), "--contender-cpus", str(cpu),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["settings"]["contender_cpus"] == [cpu]
    assert all(c["throughput"]["mean"] > 0 for c in doc["contenders"].values())
    assert f"every contender ran pinned to CPU {cpu};" in (out / "results.md").read_text()
