"""`topics apply` against the real broker: create, grow, configure, idempotent, never delete."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml
from confluent_kafka.admin import AdminClient, ConfigResource

from stream_infer.tools.topics import TopicDecl, apply_topics
from tests.cli import run_cli
from tests.integration.conftest import ROOT, unique


def _cli(*args: str, env_bootstrap: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        *args, env={**os.environ, "STREAM_INFER_KAFKA__BOOTSTRAP_SERVERS": env_bootstrap}
    )


def _describe(kafka: str, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    admin = AdminClient({"bootstrap.servers": kafka})
    meta = admin.list_topics(timeout=10)
    futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n) for n in names])
    configs = {
        res.name: {k: e.value for k, e in fut.result().items()} for res, fut in futures.items()
    }
    return {n: (len(meta.topics[n].partitions), configs[n]) for n in names}


def test_apply_twice_leaves_exactly_the_declared_topics(kafka: str, tmp_path: Path) -> None:
    a, b = unique("decl-a"), unique("decl-b")
    folder = tmp_path / "topics"
    folder.mkdir()
    (folder / "a.yaml").write_text(
        yaml.safe_dump(
            {
                "name": a,
                "partitions": 4,
                "replication_factor": 1,
                "config": {"retention.ms": 3600000, "cleanup.policy": "delete"},
            }
        )
    )
    (folder / "b.yml").write_text(yaml.safe_dump([{"name": b, "partitions": 2}]))
    first = _cli("topics", "apply", "--dir", str(folder), env_bootstrap=kafka)
    assert first.returncode == 0, first.stderr
    assert (
        f"{a}: created (4 partitions" in first.stdout
        and f"{b}: created (2 partitions" in first.stdout
    )
    second = _cli("topics", "apply", "--dir", str(folder), env_bootstrap=kafka)
    assert second.returncode == 0, second.stderr
    assert sorted(second.stdout.split("\n")) == sorted([f"{a}: unchanged", f"{b}: unchanged", ""])
    state = _describe(kafka, [a, b])
    assert state[a][0] == 4 and state[b][0] == 2
    assert state[a][1]["retention.ms"] == "3600000"


def test_apply_grows_partitions_updates_configs_and_never_deletes(kafka: str) -> None:
    conf = {"bootstrap.servers": kafka}
    keep, other = unique("keep"), unique("other")
    apply_topics(
        conf,
        [
            TopicDecl(name=keep, partitions=2, config={"retention.ms": "1000000"}),
            TopicDecl(name=other, partitions=1),
        ],
    )
    changes = apply_topics(
        conf, [TopicDecl(name=keep, partitions=5, config={"retention.ms": "2000000"})]
    )
    assert {(c.action, c.detail) for c in changes} == {
        ("partitions", "2 -> 5"),
        ("config", "retention.ms=2000000"),
    }
    state = _describe(kafka, [keep, other])
    assert state[keep][0] == 5 and state[keep][1]["retention.ms"] == "2000000"
    assert state[other][0] == 1  # undeclared this time, still there
    shrink = apply_topics(conf, [TopicDecl(name=keep, partitions=3)])
    assert [c.action for c in shrink] == ["warning", "unchanged"]
    assert "cannot shrink" in shrink[0].detail
    assert _describe(kafka, [keep])[keep][0] == 5


def test_bad_declarations_are_reported_by_file(kafka: str, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.yaml").write_text("name: ok-name\npartitions: 0\n")
    result = _cli("topics", "apply", "--dir", str(folder), env_bootstrap=kafka)
    assert result.returncode == 1
    assert "x.yaml: partitions: Input should be greater than or equal to 1" in result.stderr
    (folder / "x.yaml").write_text("name: ok-name\npartitions: 1\nretention: 5\n")
    result = _cli("topics", "apply", "--dir", str(folder), env_bootstrap=kafka)
    assert "retention: unknown key" in result.stderr and result.returncode == 1


def test_a_config_kafka_rejects_names_the_topic(kafka: str) -> None:
    name = unique("badconf")
    result_topics = apply_topics({"bootstrap.servers": kafka}, [TopicDecl(name=name, partitions=1)])
    assert result_topics[0].action == "created"
    import pytest

    from stream_infer.errors import TopicError

    with pytest.raises(TopicError, match=f"updating the config of '{name}' failed"):
        apply_topics(
            {"bootstrap.servers": kafka},
            [TopicDecl(name=name, partitions=1, config={"no.such.config": "1"})],
        )


def test_repo_declarations_cover_the_default_config() -> None:
    from stream_infer.config import Settings
    from stream_infer.tools.topics import load_declarations

    names = {d.name for d in load_declarations(ROOT / "topics")}
    s = Settings()
    assert names == {*s.topics.inputs, s.topics.output, s.topics.dead_letter}
