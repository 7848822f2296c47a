"""The files around the code stay in line with it: compose commands, topic declarations."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.main import get_command

from stream_infer.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_compose_services_call_real_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = get_command(app).commands  # type: ignore[attr-defined]
    used = [svc["command"][0] for svc in compose["services"].values() if "command" in svc]
    assert used, "no service runs stream-infer"
    for name in used:
        assert name in commands, name
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4.")


def test_pinned_kafka_is_4x() -> None:
    pom = (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    assert "<kafka.version>4." in pom
