"""Reading another process's CPU clock, as the bench does for the broker."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_infer.tools.bench.process import ContenderProcess, cpu_clock


def test_the_clock_counts_the_process_cpu_and_goes_nan_when_it_is_gone() -> None:
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    proc = subprocess.Popen([sys.executable, "-c", spin + "input()"], stdin=subprocess.PIPE)
    try:
        clock = cpu_clock(proc.pid)
        deadline = time.monotonic() + 30
        while clock() < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.3 <= clock() < 5.0
    finally:
        proc.communicate(b"\n", timeout=30)
    assert math.isnan(clock())


def test_no_pid_reads_nan() -> None:
    assert math.isnan(cpu_clock(None)())


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity (Linux) and at least two usable CPUs to pin to one",
)
def test_a_pinned_contender_runs_on_its_cpus_only(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    show = "import os, threading; print(sorted(os.sched_getaffinity(0)))"
    proc = ContenderProcess([sys.executable, "-c", show], tmp_path / "log.txt", frozenset({cpu}))
    assert proc.popen.wait(60) == 0
    proc.stop()
    assert (tmp_path / "log.txt").read_text().strip() == f"[{cpu}]"
