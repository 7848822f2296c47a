"""deploy/grafana: the panels operators need, valid PromQL, the group and data-source variables."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.deploy.common import dashboard, dashboard_exprs, dashboard_panels, grafana_to_promql

REQUIRED_PANELS = {
    "Consumer lag per partition",
    "Throughput",
    "End-to-end latency",
    "Inference duration",
    "Batch size",
    "Dead letters by stage",
    "Desired vs actual replicas",
    "Top drifting features",
}


def _targets(title: str) -> list[str]:
    (panel,) = [p for p in dashboard_panels() if p["title"] == title]
    return [t["expr"] for t in panel["targets"]]


def test_dashboard_has_the_panels_operators_need() -> None:
    titles = [p["title"] for p in dashboard_panels()]
    assert len(titles) == len(set(titles))
    assert set(titles) >= REQUIRED_PANELS
    assert dashboard()["uid"] == "stream-infer"


def test_panels_show_what_their_titles_say() -> None:
    assert any("stream_infer_consumer_lag" in e for e in _targets("Consumer lag per partition"))
    throughput = " ".join(_targets("Throughput"))
    assert "stream_infer_consumed_messages_total" in throughput
    assert "stream_infer_predictions_total" in throughput
    for title, metric in (
        ("End-to-end latency", "stream_infer_end_to_end_latency_seconds_bucket"),
        ("Inference duration", "stream_infer_inference_duration_seconds_bucket"),
    ):
        quantiles = {
            re.match(r"histogram_quantile\(([\d.]+),", e).group(1)  # type: ignore[union-attr]
            for e in _targets(title)
        }
        assert quantiles == {"0.5", "0.95", "0.99"}
        assert all(metric in e for e in _targets(title))
    assert all("by (stage)" in e for e in _targets("Dead letters by stage"))
    replicas = " ".join(_targets("Desired vs actual replicas"))
    for needed in ("stream_infer_desired_replicas", "stream_infer_group_members", "up{"):
        assert needed in replicas
    (top,) = _targets("Top drifting features")
    assert top.startswith("topk(") and "stream_infer_feature_drift_psi" in top


def test_variables_select_data_source_and_group() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    group = variables["group"]
    assert group["type"] == "query"
    assert group["datasource"]["uid"] == "${datasource}"
    assert "group" in group["query"]


def test_every_query_uses_the_variables() -> None:
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    for expr in dashboard_exprs():
        windows = re.findall(r"\[([^\]]+)\]", expr)
        assert all(w == "$__rate_interval" for w in windows), expr
        # Only the scrape-level `up` cannot be narrowed to one consumer group.
        assert '$group"' in expr or expr.startswith("count(up{"), expr


def test_every_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


def test_promql_check_catches_a_broken_query(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    broken = grafana_to_promql("sum(rate(stream_infer_predictions_total[$__rate_interval])")
    rule = {"record": "dashboard:broken", "expr": broken}
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [rule]}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
