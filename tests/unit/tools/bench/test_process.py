"""Reading another process's CPU clock, as the bench does for the broker."""

from __future__ import annotations

import math
import subprocess
import sys
import time

from stream_infer.tools.bench.process import cpu_clock


def test_the_clock_counts_the_process_cpu_and_goes_nan_when_it_is_gone() -> None:
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
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
