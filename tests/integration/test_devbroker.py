"""The local broker's storage formatting, with Kafka's own StorageTool (java + the cached jars)."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from stream_infer.tools.devbroker import _properties, fetch_jars, format_storage, free_port


def test_a_cluster_id_that_begins_with_a_dash_still_formats(tmp_path: Path) -> None:
    fetch_jars()
    raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    dashed = "-" + raw[1:]  # still 16 bytes of base64, as Kafka checks
    props = tmp_path / "server.properties"
    props.write_text(_properties(tmp_path, free_port(), free_port()))
    format_storage(props, dashed)
    meta = (tmp_path / "kraft" / "meta.properties").read_text()
    assert f"cluster.id={dashed}" in meta


def test_the_bench_broker_runs_from_tmpfs_and_leaves_nothing(tmp_path: Path) -> None:
    import psutil
    from confluent_kafka.admin import AdminClient

    from stream_infer.tools.bench.broker import bench_broker

    def ours() -> set[Path]:
        shm = Path("/dev/shm")
        return set(shm.glob("stream-infer-bench-*")) if shm.is_dir() else set()

    before = ours()
    with bench_broker(None, tmp_path) as b:
        assert b.pid is not None and psutil.pid_exists(b.pid)
        topics = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=30)
        assert topics.brokers  # a real broker answers
        if b.storage == "in memory (tmpfs)":
            (log_dir,) = ours() - before
            assert (log_dir / "kraft").is_dir()
        else:  # no tmpfs with room here: the work folder
            assert b.storage == "on disk" and (tmp_path / "broker").is_dir()
    assert not psutil.pid_exists(b.pid) or psutil.Process(b.pid).status() == "zombie"
    assert ours() == before
