"""Generated files in deploy/ are exactly what `python deploy/generate.py` writes now."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy.common import DEPLOY, ROOT, load_module


def test_generated_files_are_current() -> None:
    generate = load_module(DEPLOY / "generate.py")
    outputs = generate.outputs()
    assert {p.name for p in outputs} == {"stream-infer.json", "prometheusrule.yaml"}
    for path, text in outputs.items():
        assert path.exists(), f"{path} is missing: run python deploy/generate.py"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} differs from its source: run python deploy/generate.py "
            "(and edit the source, not the generated file)"
        )


def test_generator_check_reports_a_hand_edit(tmp_path: Path) -> None:
    """`--check` exits 1 on a stale file; run against a copy so the tree stays untouched."""
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    rule = copy / "kubernetes" / "monitoring" / "prometheusrule.yaml"
    rule.write_text(rule.read_text().replace("for: 10m", "for: 1m", 1))
    check = [sys.executable, str(copy / "generate.py"), "--check"]
    stale = subprocess.run(check, capture_output=True, text=True, timeout=120, check=False)
    assert stale.returncode == 1
    assert "prometheusrule.yaml" in stale.stderr
    subprocess.run([sys.executable, str(copy / "generate.py")], check=True, timeout=120)
    fresh = subprocess.run(check, capture_output=True, text=True, timeout=120, check=False)
    assert fresh.returncode == 0, fresh.stderr
