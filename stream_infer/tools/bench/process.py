"""One contender process: started, watched (CPU, memory, liveness) and stopped.

CPU is the user + system seconds (psutil) of the process and its children (``run
--processes N`` works in its children); the peak resident set is the kernel's
high-water mark (``VmHWM`` in ``/proc/PID/status``) summed the same way, which sees
peaks between samples, with the highest sampled RSS as the fallback where there is no
/proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream_infer.errors import StreamInferError

__all__ = ["ContenderFailed", "ContenderProcess"]


class ContenderFailed(StreamInferError):
    """A contender exited, stalled or never started; the run is recorded as failed."""


class ContenderProcess:
    """``argv`` run with its output in ``log``."""

    def __init__(self, argv: Sequence[str], log: Path) -> None:
        import psutil

        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            list(argv), stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.proc = psutil.Process(self.popen.pid)
        self.max_rss = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _tree(self) -> list[Any]:
        """The process and its live descendants."""
        import psutil

        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return [self.proc]

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
        for proc in self._tree():
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
