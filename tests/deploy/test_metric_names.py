"""Rules, dashboard and KEDA query use only metrics the worker exports (tests/data/metrics.yml)."""

from __future__ import annotations

import re

from tests.deploy.common import (
    KUBERNETES,
    dashboard_exprs,
    metrics_catalogue,
    recorded_names,
    rules,
)
from tests.deploy.kustomize import render

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_IDENT = re.compile(r"[A-Za-z_:][\w:]*")
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def _selectors(expr: str) -> tuple[set[str], list[tuple[str, set[str]]]]:
    """Metric names an expression reads, and the label names matched on each selector."""
    expr = re.sub(r"\$\{?\w+\}?", "0", expr)  # Grafana variables
    matched = []
    for name, matchers in _SELECTOR.findall(_STRING.sub('""', expr)):
        matched.append((name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))))
    bare = _SELECTOR.sub(lambda m: m.group(1) or "", _STRING.sub('""', expr))
    bare = re.sub(r"\[[^\]]*\]", "", _LABEL_LIST.sub("", bare))
    names = set()
    for match in _IDENT.finditer(bare):
        token = match.group(0)
        follows = bare[match.end() :].lstrip()[:1]
        if token.lower() in _KEYWORDS or follows == "(" or re.fullmatch(r"\d+\w*", token):
            continue
        names.add(token)
    return names | {name for name, _ in matched if name}, matched


def _unknown(expr: str) -> list[str]:
    """Names and labels of ``expr`` that the catalogue and the recording rules do not know."""
    catalogue = metrics_catalogue()
    recorded = recorded_names()
    problems = []

    def base(name: str) -> str | None:
        if name in catalogue:
            return name
        for suffix in _HISTOGRAM_SERIES:
            stem = name.removesuffix(suffix)
            if stem != name and catalogue.get(stem, {}).get("type") == "histogram":
                return stem
        return None

    names, selectors = _selectors(expr)
    for name in names:
        if ":" in name:
            if name not in recorded:
                problems.append(f"recording rule {name} is not defined in rules.yml")
        elif base(name) is None:
            problems.append(f"metric {name} is not in tests/data/metrics.yml")
    for name, labels in selectors:
        stem = base(name) if name else None
        if stem is None:
            continue
        allowed = set(catalogue[stem]["labels"]) | {"job", "instance"}
        if name.endswith("_bucket"):
            allowed.add("le")
        problems += [f"{name} has no label {label}" for label in labels - allowed]
    return problems


def _all_exprs() -> list[str]:
    exprs = [r["expr"] for g in rules()["groups"] for r in g["rules"]]
    exprs += dashboard_exprs()
    (scaled,) = render(KUBERNETES / "keda" / "desired-replicas")
    exprs += [t["metadata"]["query"] for t in scaled["spec"]["triggers"]]
    return exprs


def test_rules_dashboard_and_keda_use_known_metrics_and_labels() -> None:
    problems = [f"{p} (in {e!r})" for e in _all_exprs() for p in _unknown(e)]
    assert not problems, "\n".join(problems)


def test_every_exported_metric_is_used_somewhere() -> None:
    used = set()
    for expr in _all_exprs():
        used |= _selectors(expr)[0]
    for name, spec in metrics_catalogue().items():
        series = {name}
        if spec["type"] == "histogram":
            series |= {name + suffix for suffix in _HISTOGRAM_SERIES}
        assert used & series, f"{name} appears in no rule and no panel"


def test_the_check_catches_unknown_names_and_labels() -> None:
    assert _unknown("sum(rate(stream_infer_predictions_total[5m]))") == []
    assert _unknown("rate(stream_infer_predicted_total[5m])") == [
        "metric stream_infer_predicted_total is not in tests/data/metrics.yml"
    ]
    assert _unknown('stream_infer_consumer_lag{partiton="0"}') == [
        "stream_infer_consumer_lag has no label partiton"
    ]
    assert _unknown("group:stream_infer_lag:sum > 0") == [
        "recording rule group:stream_infer_lag:sum is not defined in rules.yml"
    ]
    quantile = "histogram_quantile(0.5, sum by (le) (rate(stream_infer_batch_size_bucket[1m])))"
    assert _unknown(quantile) == []
    assert _unknown('stream_infer_batch_size_bucket{le="1"}') == []
