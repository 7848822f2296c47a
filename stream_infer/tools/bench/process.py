"""One contender process: started, watched (CPU, memory, liveness) and stopped.

CPU is the user + system seconds (psutil) of the process and its children (``run
--processes N`` works in its children); the peak resident set is the kernel's
high-water mark (``VmHWM`` in ``/proc/PID/status``) summed the same way, which sees
peaks between samples, with the highest sampled RSS as the fallback where there is no
/proc.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stream_infer.errors import StreamInferError

__all__ = ["ContenderFailed", "ContenderProcess", "cpu_clock"]

_TREE_REFRESH_S = 0.25
_PIN = (
    "import os, sys; os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(',')}); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def cpu_clock(pid: int | None) -> Callable[[], float]:
    """User + system seconds of process ``pid`` so far, read on each call.

    NaN where there is no such process, or once it is gone: the broker's CPU is shown
    only where the bench started the broker itself, and a figure it cannot read is
    left out rather than guessed.
    """
    import psutil

    try:
        proc = psutil.Process(pid) if pid is not None else None
    except psutil.Error:
        proc = None

    def read() -> float:
        if proc is None:
            return math.nan
        try:
            t = proc.cpu_times()
        except psutil.Error:
            return math.nan
        return float(t.user + t.system)

    return read


class ContenderFailed(StreamInferError):
    """A contender exited, stalled or never started; the run is recorded as failed."""


class ContenderProcess:
    """``argv`` run with its output in ``log``."""

    def __init__(self, argv: Sequence[str], log: Path, cpus: frozenset[int] | None = None) -> None:
        import psutil

        self.log = log
        self._out = log.open("wb")
        if cpus:
            # Pinned before it execs, so every thread it will ever start inherits the set.
            argv = [sys.executable, "-c", _PIN, ",".join(map(str, sorted(cpus))), *argv]
        self.popen = subprocess.Popen(
            list(argv), stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.proc = psutil.Process(self.popen.pid)
        self.max_rss = 0
        self._found: list[Any] = [self.proc]
        self._found_at = -math.inf

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _tree(self, fresh: bool = False) -> list[Any]:
        """The process and its descendants, looked for again at most every 0.25 s.

        Finding descendants reads every process on the machine (about 0.8 ms of CPU):
        at the harness's 10 ms sampling that was a fifth of a core, taken from the
        contender beside it. Children start with the contender, before its first
        output, so a list a quarter of a second old misses nothing inside a window.
        """
        import psutil

        now = time.monotonic()
        if fresh or now - self._found_at >= _TREE_REFRESH_S:
            self._found_at = now
            with contextlib.suppress(psutil.Error):
                self._found = [self.proc, *self.proc.children(recursive=True)]
        return self._found

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def rss(self) -> int:
        import psutil

        value = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                value += int(proc.memory_info().rss)
        self.max_rss = max(self.max_rss, value)
        return value

    def peak_rss(self) -> int:
        """The high-water mark of the resident set over the process's life (bytes)."""
        total = 0
        for proc in self._tree(fresh=True):
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total or self.max_rss

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise ContenderFailed(f"exited with code {code}: {self.tail()}")

    def tail(self, lines: int = 3) -> str:
        """The last lines of its log, on one line (for an error message)."""
        self._out.flush()
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"see {self.log}"
        shown = " | ".join(line.strip() for line in text[-lines:] if line.strip())
        return f"{shown[-600:]} (log: {self.log})"

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the contender's graceful stop), SIGKILL after ``timeout``; its exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._out.close()
        return self.popen.returncode
