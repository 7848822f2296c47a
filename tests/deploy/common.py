"""Paths and readers shared by the deploy/ tests (no broker, no cluster, no Docker)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = Path(__file__).with_name("rules_test.yml")
DASHBOARD_JSON = DEPLOY / "grafana" / "stream-infer.json"
DATA = ROOT / "tests" / "data"
SCHEMAS = DATA / "schemas"


def load_module(path: Path) -> ModuleType:
    """A script of deploy/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"deploy_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return data


def alerts() -> list[dict[str, Any]]:
    return [r for g in rules()["groups"] for r in g["rules"] if "alert" in r]


def recorded_names() -> set[str]:
    return {r["record"] for g in rules()["groups"] for r in g["rules"] if "record" in r}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_JSON.read_text())
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def grafana_to_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, so that promtool can parse it."""
    expr = expr.replace("$__rate_interval", "1m")
    return re.sub(r"\$\{?(\w+)\}?", "stream-infer", expr)


def metrics_catalogue() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = yaml.safe_load((DATA / "metrics.yml").read_text())
    return data


def dockerfile_stages() -> dict[str, list[dict[str, Any]]]:
    """The Dockerfile's instructions by stage name (dockerfile-parse's structure, no comments)."""
    from dockerfile_parse import DockerfileParser

    # "" holds what comes before the first FROM (global ARGs).
    stages: dict[str, list[dict[str, Any]]] = {"": []}
    current = stages[""]
    for item in DockerfileParser(path=str(ROOT / "Dockerfile")).structure:
        if item["instruction"] == "FROM":
            name = item["value"].split()[-1] if " AS " in item["value"].upper() else ""
            current = stages.setdefault(name, [])
        if item["instruction"] != "COMMENT":
            current.append(item)
    return stages


def stage_env(stage: list[dict[str, Any]]) -> dict[str, str]:
    """ENV of a stage (key=value form only, as the Dockerfile writes it)."""
    env: dict[str, str] = {}
    for item in stage:
        if item["instruction"] == "ENV":
            for pair in item["value"].split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env
