"""deploy/prometheus: promtool checks and unit tests, and what every alert must carry."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.common import DEPLOY, KUBERNETES, RULES, RULES_TEST, alerts, rules

ALERTS = {
    "StreamInferLagHigh",
    "StreamInferDeadLetterRatioHigh",
    "StreamInferStalled",
    "StreamInferWorkerDown",
    "StreamInferNoWorkers",
    "StreamInferFeatureDrift",
    "StreamInferOutputDrift",
}


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_unit_tests_pass(promtool: str) -> None:
    # Run from the test file's folder: promtool resolves rule_files against the working dir.
    result = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name],
        cwd=RULES_TEST.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_fails_on_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: the same file with one expected label changed does."""
    folder = tmp_path
    (folder / "rules.yml").write_text(RULES.read_text())
    text = RULES_TEST.read_text().replace("../../deploy/prometheus/rules.yml", "rules.yml")
    text = text.replace("instance: w1\n", "instance: w2\n", 1)
    (folder / "rules_test.yml").write_text(text)
    result = subprocess.run(
        [promtool, "test", "rules", "rules_test.yml"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    assert "StreamInferWorkerDown" in result.stdout + result.stderr


def test_compose_prometheus_config_is_valid(promtool: str) -> None:
    result = _promtool(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names == ALERTS
    assert names <= firing, names - firing
    assert names <= quiet, names - quiet


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_carries_for_severity_and_explanations(name: str) -> None:
    (alert,) = [a for a in alerts() if a["alert"] == name]
    assert re.fullmatch(r"\d+[smh]", alert["for"])
    assert alert["labels"]["severity"] in {"warning", "critical"}
    notes = alert["annotations"]
    assert {"summary", "description", "runbook"} <= set(notes)
    # Say which group, worker, feature or output: the labels are in the text.
    for key in ("summary", "description"):
        assert "{{ $labels." in notes[key], (name, key)
    for label in re.findall(r"\$labels\.(\w+)", notes["summary"] + notes["description"]):
        assert label in _output_labels(alert["expr"]), (name, label)


def _output_labels(expr: str) -> set[str]:
    """Labels the alert's series can carry: those of its by()/on() clauses and selectors."""
    labels = set()
    for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
        labels |= {part.strip() for part in clause.split(",")}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"(\w+)\s*=", matchers))
    for group in rules()["groups"]:
        for rule in group["rules"]:
            if "record" in rule and rule["record"] in expr:
                labels |= _output_labels(rule["expr"])
    if "up{" in expr:
        labels |= {"job", "instance"}
    return labels


def test_prometheus_rule_carries_the_same_groups() -> None:
    text = (KUBERNETES / "monitoring" / "prometheusrule.yaml").read_text()
    (resource,) = [doc for doc in yaml.safe_load_all(text) if doc]
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == rules()["groups"]
