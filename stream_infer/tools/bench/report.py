"""The results: aggregated over repeats, checked against the targets, written as JSON,
markdown and a PNG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream_infer.tools.bench.contenders import CONTENDERS
from stream_infer.tools.bench.harness import RunResult
from stream_infer.tools.bench.latency import LatencyStep
from stream_infer.tools.bench.machine import machine_line
from stream_infer.tools.bench.stats import Spread, ratio_matrix

__all__ = ["TARGETS", "aggregate", "render_markdown", "write_plot"]

# (contender, compared with, at least, what it stands for): the project's stated goals.
TARGETS = (
    ("stream-infer", "bare", 0.6, "catch-up >= 0.6 x a bare consume -> produce loop"),
    ("stream-infer", "tutorial", 30.0, "catch-up >= 30 x the per-message tutorial loop"),
    ("stream-infer", "faust-batched", 10.0, "catch-up >= 10 x a plain Faust agent (take 512)"),
    ("stream-infer", "ort", 0.9, "when the model dominates: >= 0.9 x onnxruntime alone"),
)
_MODEL_BOUND = 3.0  # ort alone within this factor of the worker: the model dominates


def aggregate(
    names: Sequence[str], runs: Sequence[RunResult], steps: Sequence[LatencyStep]
) -> dict[str, Any]:
    """Per contender: spreads over repeats, its runs, its latency steps; ratios; targets."""
    per: dict[str, Any] = {}
    for name in names:
        mine = [r for r in runs if r.contender == name]
        ok = [r for r in mine if r.error is None]
        per[name] = {
            "description": CONTENDERS[name].description,
            "events": mine[0].events if mine else 0,
            "throughput": Spread.of(r.rate for r in ok).as_dict(),
            "cpu_s_per_million": Spread.of(r.cpu_per_million for r in ok).as_dict(),
            "broker_cpu_s_per_million": Spread.of(r.broker_cpu_per_million for r in ok).as_dict(),
            "peak_rss_mib": Spread.of(r.peak_rss / 2**20 for r in ok).as_dict(),
            "runs": [r.as_dict() for r in mine],
            "latency": [s.as_dict() for s in steps if s.contender == name],
        }
    means = {
        n: float(per[n]["throughput"]["mean"])
        for n in names
        if not math.isnan(per[n]["throughput"]["mean"])
    }
    loads = Spread.of(r.load_avg for r in runs)
    return {
        "contenders": per,
        "ratios": ratio_matrix(means),
        "targets": _targets(means),
        "load_average": {"min": loads.low, "max": loads.high},
    }


def _targets(means: dict[str, float]) -> list[dict[str, Any]]:
    out = []
    for a, b, least, what in TARGETS:
        if a not in means or b not in means:
            continue
        ratio = means[a] / means[b]
        status = "met" if ratio >= least else "not met"
        if b == "ort" and means[b] > _MODEL_BOUND * means[a]:
            status = f"n/a: the model does not dominate (ort alone is {means[b] / means[a]:.0f}x)"
        out.append({"what": what, "versus": b, "ratio": ratio, "target": least, "status": status})
    return out


def _n(x: float, digits: int = 0) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def _ratio(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:.3g}x" if x < 100 else f"{x:,.0f}x"


def _load_line(doc: dict[str, Any]) -> list[str]:
    """How busy the machine was: other work on the same cores moves every figure."""
    load = doc.get("load_average") or {}
    low, high = load.get("min"), load.get("max")
    if low is None or high is None or math.isnan(low):
        return []
    cpus = doc["machine"].get("logical_cpus") or "?"
    return [
        f"Load: the 1-minute load average was {low:.1f} to {high:.1f} as the catch-up runs ended "
        f"({cpus} logical CPUs; the contender, the broker and the harness account for about 2).",
        "",
    ]


def _pinning_line(settings: dict[str, Any]) -> list[str]:
    cpus = settings.get("contender_cpus") or []
    if not cpus:
        return []
    return [
        f"CPUs: every contender ran pinned to CPU {', '.join(map(str, cpus))}; the broker, the "
        "harness and the load generator on the others (`--contender-cpus`).",
        "",
    ]


def _generator_note(lag_ms: float) -> str:
    """Say when the load generator could not keep its schedule: its lag counts as latency."""
    if lag_ms > 1000:
        return f"the load generator could not hold this rate ({lag_ms:,.0f} ms behind)"
    if lag_ms > 50:
        return f"load generator {lag_ms:,.0f} ms behind at worst"
    return ""


def render_markdown(doc: dict[str, Any]) -> str:
    per, ratios = doc["contenders"], doc["ratios"]
    s = doc["settings"]
    ref = "stream-infer" if "stream-infer" in ratios else next(iter(ratios), None)
    lines = [
        f"# stream-infer bench, {doc['date']}",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {machine_line(doc['machine'])}.",
        "",
        *_load_line(doc),
        *_pinning_line(s),
        f"Model: `{doc['model']['name']}`, {doc['model']['description']}.",
        "",
        f"Method: catch-up over {s['events']:,} pre-filled events (each contender's count is in "
        f"the table) from a {s['partitions']}-partition topic, {s['repeats']} round(s) in "
        "rotated order, each run a fresh process, consumer group and output topic; events/s "
        "between 10% and 90% of the outputs (output topic's last stable offsets every 10 ms); "
        "CPU is the process's user + system seconds in that window, broker CPU the "
        "broker's (its own traffic plus the harness's sampling: shared, on these cores); "
        "peak RSS its VmHWM. "
        f"Latency: open-loop load at {', '.join(f'{x:.0%}' for x in s['loads'])} of each "
        f"contender's mean catch-up rate, each held {s['settle_s']:g} s to settle, then "
        f"{s['latency_s']:g} s measured; receive time of the output minus the time the event "
        "was due, one clock, HdrHistogram. See README, Benchmark.",
        "",
        "## Catch-up throughput",
        "",
        f"| contender | events | events/s (mean) | min - max | vs {ref} | CPU s / M events "
        "| broker CPU s / M events | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in per.items():
        t = c["throughput"]
        vs = ratios.get(name, {}).get(ref, math.nan) if ref else math.nan
        lines.append(
            f"| {name} | {c['events']:,} | {_n(t['mean'])} | {_n(t['min'])} - {_n(t['max'])} "
            f"| {_ratio(vs)} | {_n(c['cpu_s_per_million']['mean'], 1)} "
            f"| {_n(c['broker_cpu_s_per_million']['mean'], 1)} "
            f"| {_n(c['peak_rss_mib']['mean'])} |"
        )
    if doc["targets"]:
        lines += ["", "## Targets", "", "| target | measured | status |", "|---|---:|---|"]
        lines += [f"| {t['what']} | {_ratio(t['ratio'])} | {t['status']} |" for t in doc["targets"]]
    if len(ratios) > 1:
        names = list(ratios)
        lines += ["", "## Throughput ratios (row / column)", ""]
        lines += ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        lines += [
            f"| {a} | " + " | ".join(_ratio(ratios[a][b]) for b in names) + " |" for a in names
        ]
    steps = [st for c in per.values() for st in c["latency"]]
    if steps:
        lines += [
            "",
            "## Latency (event due -> prediction received)",
            "",
            "| contender | load | offered/s | p50 ms | p99 ms | p99.9 ms | max ms | events "
            "| note |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for st in steps:
            note = st["error"] or _generator_note(st["generator_max_lag_ms"])
            if not st["error"] and st["delivered_per_s"] < 0.95 * st["offered_per_s"]:
                note = (note + "; " if note else "") + (
                    f"did not keep up: {st['delivered_per_s']:,.0f}/s delivered"
                )
            early = st.get("settling") or {}
            if early.get("count") and early["p99_ms"] > 2 * st.get("p99_ms", math.inf):
                note = (note + "; " if note else "") + (
                    f"settling: p99 {early['p99_ms']:,.0f} ms in the first {s['settle_s']:g} s"
                )
            lines.append(
                f"| {st['contender']} | {st['load']:.0%} | {_n(st['offered_per_s'])} "
                f"| {_n(st.get('p50_ms', math.nan), 1)} | {_n(st.get('p99_ms', math.nan), 1)} "
                f"| {_n(st.get('p999_ms', math.nan), 1)} | {_n(st.get('max_ms', math.nan), 1)} "
                f"| {st.get('count', 0):,} | {note} |"
            )
    lines += ["", "## Contenders", ""]
    lines += [f"- `{name}`: {c['description']}" for name, c in per.items()]
    failures = [(n, r) for n, c in per.items() for r in c["runs"] if r["error"]]
    if failures:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {n}, round {r['round']}: {r['error']}" for n, r in failures]
    return "\n".join(lines) + "\n"


def write_plot(doc: dict[str, Any], path: Path) -> None:
    """Throughput bars (min-max over repeats) and latency percentiles against offered load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = doc["contenders"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    names = [n for n in per if not math.isnan(per[n]["throughput"]["mean"])]
    means = [per[n]["throughput"]["mean"] for n in names]
    lo = [m - per[n]["throughput"]["min"] for n, m in zip(names, means, strict=True)]
    hi = [per[n]["throughput"]["max"] - m for n, m in zip(names, means, strict=True)]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {n: colors[i % len(colors)] for i, n in enumerate(per)}
    left.bar(names, means, yerr=[lo, hi], capsize=4, color=[color[n] for n in names])
    left.set_yscale("log")
    left.set_ylabel("events/s (log)")
    left.set_title(f"Catch-up throughput, {doc['settings']['repeats']} round(s), min-max")
    left.tick_params(axis="x", rotation=30)
    for i, m in enumerate(means):
        left.annotate(f"{m:,.0f}", (i, m), ha="center", va="bottom", fontsize=8)
    styles = {"p50_ms": ":", "p99_ms": "-", "p999_ms": "--"}
    for n, c in per.items():
        steps = [s for s in c["latency"] if s.get("count")]
        if not steps:
            continue
        x = [s["offered_per_s"] for s in steps]
        for key, style in styles.items():
            label = n if key == "p99_ms" else None  # one legend entry per contender
            right.plot(x, [s[key] for s in steps], style, marker="o", color=color[n], label=label)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("offered events/s (50% and 80% of each contender's max)")
    right.set_ylabel("latency ms (log)")
    right.set_title("Event-to-prediction latency: p50 dotted, p99 solid, p99.9 dashed")
    if right.lines:
        right.legend(fontsize=7, ncol=2)
    fig.suptitle(f"stream-infer bench {doc['date']}, model {doc['model']['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
