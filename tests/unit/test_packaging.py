"""The files around the code stay in line with it: compose, Dockerfile, topic declarations.

No Docker engine runs here, so these read the files and check them against the code: the
commands exist, the settings load, the mounted files exist, the image builds from files that
are in the build context.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from typer.main import get_command

from stream_infer.cli import app
from stream_infer.config import load_settings
from tests.deploy.common import dockerfile_stages, load_module, stage_env

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "stream-infer:local"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the stream-infer image."""
    return {name: s for name, s in compose["services"].items() if s.get("image") == IMAGE}


def _workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _ours(compose).items() if s.get("command", [None])[0] == "run"}


def _host_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            mounts[container] = (ROOT / host).resolve()
    return mounts


def _resolve(command: list[str]) -> Any:
    """The command that ``stream-infer COMMAND...`` runs, sub-command groups descended.

    Duck-typed on ``commands``: recent typer versions bring their own copy of click, whose
    Group is not ``click.Group``.
    """
    current = get_command(app)
    for word in command:
        if word.startswith("-") or not hasattr(current, "commands"):
            break
        sub = current.commands.get(word)
        assert sub is not None, f"stream-infer has no command {word!r} (in {command})"
        current = sub
    assert not hasattr(current, "commands"), f"{command} stops at a command group"
    return current


def test_compose_services_call_real_commands(compose: dict[str, Any]) -> None:
    commands = [s["command"] for s in _ours(compose).values() if "command" in s]
    assert {c[0] for c in commands} >= {"topics", "run", "produce"}
    for command in commands:
        _resolve(command)
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4.")


def test_command_resolution_rejects_unknown_commands() -> None:
    assert _resolve(["topics", "apply"]).name == "apply"
    assert _resolve(["run", "--config", "x.yaml"]).name == "run"
    with pytest.raises(AssertionError, match="no command 'aply'"):
        _resolve(["topics", "aply"])
    with pytest.raises(AssertionError, match="command group"):
        _resolve(["topics"])


def test_compose_builds_the_image_once(compose: dict[str, Any]) -> None:
    builders = [n for n, s in compose["services"].items() if "build" in s]
    assert len(builders) == 1, builders
    (builder,) = builders
    assert compose["services"][builder]["image"] == IMAGE
    for name, service in _ours(compose).items():
        if name != builder:
            assert service["pull_policy"] == "never", name
    assert {"worker-1", "worker-2", "producer", "topics"} <= set(_ours(compose))


def test_compose_settings_load(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    worker_ids = []
    for name, service in _ours(compose).items():
        with monkeypatch.context() as env:
            variables = service.get("environment", {})
            assert all(k.startswith("STREAM_INFER_") for k in variables), name
            for key, value in variables.items():
                env.setenv(key, str(value))
            settings = load_settings()
            assert settings.kafka.bootstrap_servers == "kafka:19092", name
            if name in _workers(compose):
                assert "STREAM_INFER_PROCESSING__WORKER_ID" in variables, name
                worker_ids.append(settings.processing.worker_id)
    assert len(worker_ids) == 2
    assert len(set(worker_ids)) == len(worker_ids), "two workers share one id"


def test_compose_kafka_is_one_node_with_every_internal_topic_at_rf_1(
    compose: dict[str, Any],
) -> None:
    env = compose["services"]["kafka"]["environment"]
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
    ):
        assert env[key] == 1, key


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for container, host in _host_mounts(service).items():
            assert host.exists(), f"{name}: {host} (for {container}) is not in the repository"
            assert host.is_relative_to(ROOT / "deploy"), host


def test_compose_prometheus_scrapes_both_workers_with_the_rules(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    workers = _workers(compose)
    expected = set()
    published = []
    for name, service in workers.items():
        with monkeypatch.context() as env:
            for key, value in service.get("environment", {}).items():
                env.setenv(key, str(value))
            port = load_settings().metrics.port
        expected.add(f"{name}:{port}")
        ((host, container),) = [p.split(":") for p in service["ports"]]
        assert int(container) == port, name
        published.append(host)
    assert len(set(published)) == len(published), "workers published on the same host port"

    prometheus = compose["services"]["prometheus"]
    mounts = _host_mounts(prometheus)
    config_path = "/etc/prometheus/prometheus.yml"
    assert mounts[config_path] == ROOT / "deploy" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(mounts[config_path].read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "stream-infer"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == expected
    for rule_file in config["rule_files"]:
        in_container = str(PurePosixPath(config_path).parent / rule_file)
        assert mounts[in_container] == ROOT / "deploy" / "prometheus" / "rules.yml"


def test_compose_grafana_provisions_the_dashboard_and_prometheus(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = _host_mounts(grafana)
    folder = mounts["/etc/grafana/provisioning/dashboards"]
    (provider,) = yaml.safe_load(next(folder.glob("*.yml")).read_text())["providers"]
    dashboards = PurePosixPath(provider["options"]["path"])
    assert mounts[str(dashboards / "stream-infer.json")] == (
        ROOT / "deploy" / "grafana" / "stream-infer.json"
    )
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in mounts
    sources = mounts["/etc/grafana/provisioning/datasources"]
    (datasource,) = yaml.safe_load(next(sources.glob("*.yml")).read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", datasource["url"]).groups()  # type: ignore[union-attr]
    assert host in compose["services"]
    assert f"{port}:{port}" in compose["services"][host]["ports"]


# -- Dockerfile ------------------------------------------------------------------------------


def _dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "exceptions are not handled here"
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        or fnmatch.fnmatch(prefix, pattern)
        or fnmatch.fnmatch(PurePosixPath(prefix).name, pattern.removeprefix("**/"))
        for pattern in patterns
        for prefix in prefixes
    )


def test_dockerignore_check_matches() -> None:
    assert _dockerignored("tests/unit/test_packaging.py")
    assert _dockerignored("stream_infer/__pycache__/cli.cpython-312.pyc")
    assert not _dockerignored("stream_infer/cli/common.py")


def test_dockerfile_copies_files_that_are_in_the_build_context() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "runtime", "runtime (CPU) must be the default, last, target"
    assert {"builder", "runtime", "gpu"} <= set(stages)
    copies = [i for s in stages.values() for i in s if i["instruction"] == "COPY"]
    assert copies
    for copy in copies:
        words = shlex.split(copy["value"])
        assert not any(w.startswith("--from") for w in words), "use RUN --mount from builder"
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not _dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    # What the builder runs, it has copied.
    builder = " ".join(i["value"] for i in stages["builder"])
    assert "requirements.py" in builder


@pytest.mark.parametrize("stage", ["runtime", "gpu"])
def test_images_run_stream_infer_as_a_user_with_a_home(stage: str) -> None:
    items = dockerfile_stages()[stage]
    values = {i["instruction"]: i["value"] for i in items}
    user = values["USER"].split(":")[0]
    assert user.isdigit() and int(user) >= 1000
    assert values["EXPOSE"] == "8000"
    assert values["ENTRYPOINT"] == '["stream-infer"]'
    env = stage_env(items)
    home = env["HOME"]
    assert PurePosixPath(env["STREAM_INFER_CACHE_DIR"]).is_relative_to(home)
    runs = " ".join(i["value"] for i in items if i["instruction"] == "RUN")
    assert f"--uid {user}" in runs and f"--home-dir {home} --create-home" in runs
    flavour = "cpu" if stage == "runtime" else "gpu"
    assert f"requirements-{flavour}.txt" in runs
    assert "--no-deps /dist/*.whl" in runs


def test_gpu_image_is_cuda_with_cudnn() -> None:
    args = [i["value"] for i in dockerfile_stages()[""] if i["instruction"] == "ARG"]
    (cuda,) = [a.split("=", 1)[1] for a in args if a.startswith("CUDA_IMAGE=")]
    assert cuda.startswith("nvidia/cuda:") and "cudnn" in cuda and "runtime" in cuda


def test_image_requirements_swap_the_onnxruntime_flavour() -> None:
    module = load_module(ROOT / "deploy" / "docker" / "requirements.py")
    pyproject = ROOT / "pyproject.toml"
    cpu = module.requirements(pyproject, "cpu", [])
    gpu = module.requirements(pyproject, "gpu", ["demo"])
    assert "onnxruntime>=1.20,<2" in cpu
    assert not any(r.startswith("onnxruntime-gpu") for r in cpu)
    assert "onnxruntime-gpu>=1.20,<2" in gpu
    assert not any(re.match(r"onnxruntime[^-]", r) for r in gpu)
    assert not any(";" in r for r in cpu if r.startswith("onnxruntime"))
    shared = [r for r in cpu if not r.startswith("onnxruntime")]
    assert shared and all(r in gpu for r in shared)
    assert any(r.startswith("scikit-learn") for r in gpu)
    assert not any(r.startswith("scikit-learn") for r in cpu)
    with pytest.raises(ValueError, match="no extra 'gpu-tools'"):
        module.requirements(pyproject, "cpu", ["gpu-tools"])


def test_pinned_kafka_is_4x() -> None:
    pom = (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    assert "<kafka.version>4." in pom
