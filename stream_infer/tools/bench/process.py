"""One contender process: started, watched (CPU, memory, liveness) and stopped.

CPU is the process's own user + system seconds (psutil); the peak resident set is
the kernel's high-water mark (``VmHWM`` in ``/proc/PID/status``), which sees peaks
between samples, with the highest sampled RSS as the fallback where there is no /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

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

    def cpu_seconds(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        value = int(self.proc.memory_info().rss)
        self.max_rss = max(self.max_rss, value)
        return value

    def peak_rss(self) -> int:
        """The high-water mark of the resident set over the process's life (bytes)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return self.max_rss

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
