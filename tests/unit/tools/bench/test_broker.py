"""Where the benchmark's own broker keeps its log: tmpfs with room to spare, else disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_infer.tools.bench import broker
from stream_infer.tools.bench.broker import bench_broker


def test_the_log_goes_to_tmpfs_when_it_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shm, work = tmp_path / "shm", tmp_path / "work"
    shm.mkdir()
    monkeypatch.setattr(broker, "_TMPFS", shm)
    data, storage = broker._log_dir(work, on_disk=False, room=0)
    assert data.parent == shm and data.is_dir() and storage == "in memory (tmpfs)"
    # Asked for disk, or less than twice the run's room free (tmpfs is memory): disk.
    assert broker._log_dir(work, on_disk=True, room=0) == (work / "broker", "on disk")
    assert broker._log_dir(work, on_disk=False, room=2**62) == (work / "broker", "on disk")
    monkeypatch.setattr(broker, "_TMPFS", tmp_path / "none")
    assert broker._log_dir(work, on_disk=False, room=0) == (work / "broker", "on disk")


def test_an_external_broker_is_used_as_it_is(tmp_path: Path) -> None:
    with bench_broker("127.0.0.1:9", tmp_path) as b:
        assert (b.bootstrap, b.pid, b.storage) == ("127.0.0.1:9", None, "")
    assert list(tmp_path.iterdir()) == []
