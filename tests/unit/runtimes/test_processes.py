"""What each of ``run --processes N``'s children is told (no broker: the environment only)."""

from __future__ import annotations

from pathlib import Path

from stream_infer.config import Settings
from stream_infer.runtimes.processes import child_env
from tests.cli import run_cli


def test_each_child_gets_its_own_port_and_a_suffixed_static_id() -> None:
    settings = Settings(metrics={"port": 9100}, processing={"worker_id": "pod-3"})
    envs = [child_env(settings, i, {"PATH": "/bin"}) for i in range(3)]
    assert [e["STREAM_INFER_METRICS__PORT"] for e in envs] == ["9100", "9101", "9102"]
    assert [e["STREAM_INFER_PROCESSING__WORKER_ID"] for e in envs] == [
        "pod-3-0", "pod-3-1", "pod-3-2",
    ]  # fmt: skip
    assert all(e["PATH"] == "/bin" for e in envs)


def test_without_a_chosen_id_each_child_keeps_its_own_default() -> None:
    settings = Settings(metrics={"port": 0})
    env = child_env(settings, 1, {})
    assert env["STREAM_INFER_METRICS__PORT"] == "0"  # any free port, each its own
    assert "STREAM_INFER_PROCESSING__WORKER_ID" not in env  # hostname-pid, per child


def test_ports_past_65535_are_a_usage_error_before_anything_starts() -> None:
    env = {"STREAM_INFER_METRICS__PORT": "65534", "PATH": "/usr/bin:/bin"}
    done = run_cli("run", "--processes", "3", env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "stream-infer: usage error: --processes: metrics.port 65534 + 3 processes passes 65535"
    ]


def test_faust_children_get_their_own_folder_and_web_port(tmp_path: Path) -> None:
    settings = Settings(faust={"data_dir": str(tmp_path), "web_port": 6066})
    env = child_env(settings, 2, {})
    assert env["STREAM_INFER_FAUST__DATA_DIR"] == str(tmp_path / "2")
    assert env["STREAM_INFER_FAUST__WEB_PORT"] == "6068"
    assert "STREAM_INFER_FAUST__WEB_PORT" not in child_env(Settings(), 1, {})  # web stays off
