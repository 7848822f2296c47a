"""A real Prometheus (Debian's package) for tests: scrape workers, load our rules, run queries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import free_port
from tests.integration.conftest import ROOT

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "stream-infer.json"
KEDA = ROOT / "deploy" / "kubernetes" / "keda" / "desired-replicas" / "scaledobject.yaml"


def rules_for_tests(path: Path, hold: str = "1s") -> Path:
    """The project's rules with every ``for`` shortened: same expressions, faster alerts.

    How long a condition must hold is unit-tested with promtool; here the point is that
    each expression finds its condition in real data.
    """
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = hold
    path.write_text(yaml.safe_dump(doc))
    return path


def alert_rules() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


def recording_rules() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["record"]: r["expr"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def dashboard_queries(group: str, rate_interval: str = "20s") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard target, with the variables filled in."""
    doc = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if expr:
                    expr = expr.replace("$__rate_interval", rate_interval)
                    expr = re.sub(r"\$\{?group\}?", group, expr)
                    out.append((panel.get("title", "?"), expr))

    walk(doc["panels"])
    return out


def keda_query(group: str) -> str:
    doc = yaml.safe_load(KEDA.read_text())
    query: str = doc["spec"]["triggers"][0]["metadata"]["query"]
    return query.replace('group="stream-infer"', f'group="{group}"')


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; raises AssertionError on a PromQL or evaluation error."""
        params = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", f"{expr}: {doc}"
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def alerts(self, state: str = "firing") -> list[dict[str, str]]:
        return [r["metric"] for r in self.query(f'ALERTS{{alertstate="{state}"}}')]

    def firing(self, name: str, **labels: str) -> bool:
        return any(
            a["alertname"] == name and all(a.get(k) == v for k, v in labels.items())
            for a in self.alerts()
        )


@contextmanager
def prometheus(tmp: Path, targets: list[int], rules: Path) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (ports on 127.0.0.1) every second as job stream-infer."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (./scripts/test installs Debian's package)"
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "stream-infer",
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in targets]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.1)
        yield Prometheus(url)
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
