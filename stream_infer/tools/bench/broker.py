"""The benchmark's own broker: started for the run, its log kept in memory where it can be.

A broker writing to this kind of machine's disk stalls now and then while the kernel
writes its pages back. On the 2-core VM, at 106,000 events/s, with the broker's log on
disk, 3 one-minute runs gave p99 424 (the broker's first), 270 and 61 ms, with seconds
of 300 ms and more; with the log in tmpfs, 64 (a fresh worker's first seconds), 45 and
44 ms. Those stalls are the disk's, not any contender's: a Kafka cluster in service
has disks of its own, and nothing on the path of a produce waits for them (Kafka leaves
flushing to the OS). So the log goes to ``/dev/shm`` when it is there with twice the
room the run needs (tmpfs is memory), and to the work folder otherwise or when asked
(``--broker-on-disk``). The broker is the same Kafka either way.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BenchBroker", "bench_broker"]

_TMPFS = Path("/dev/shm")
_ROOM = 8 * 2**30  # bytes a run may write (a full bench writes about 7 GiB)


@dataclass(frozen=True)
class BenchBroker:
    bootstrap: str
    pid: int | None  # None: a broker the bench did not start (--bootstrap)
    storage: str  # "in memory (tmpfs)", "on disk", or "" for an external broker


def _log_dir(work: Path, on_disk: bool, room: int = _ROOM) -> tuple[Path, str]:
    if not on_disk and _TMPFS.is_dir():
        with contextlib.suppress(OSError):
            if shutil.disk_usage(_TMPFS).free >= 2 * room:
                return Path(tempfile.mkdtemp(prefix="stream-infer-bench-", dir=_TMPFS)), (
                    "in memory (tmpfs)"
                )
    return work / "broker", "on disk"


@contextlib.contextmanager
def bench_broker(
    bootstrap: str | None, work: Path, on_disk: bool = False, room: int = _ROOM
) -> Iterator[BenchBroker]:
    """``bootstrap`` as it is, or a broker started now and stopped (its log removed) after.

    ``room``: about how many bytes the run will write to the broker.
    """
    if bootstrap:
        yield BenchBroker(bootstrap, None, "")
        return
    from stream_infer.tools.devbroker import free_port, start_broker, stop_broker

    data, storage = _log_dir(work, on_disk, room)
    try:
        status = start_broker(free_port(), data)
        try:
            yield BenchBroker(status.bootstrap, status.pid, storage)
        finally:
            stop_broker(data)
    finally:
        if storage != "on disk":
            shutil.rmtree(data, ignore_errors=True)
