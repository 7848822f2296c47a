"""``bench --profile``: one extra catch-up run of the worker under py-spy, and what it says.

py-spy attaches to the running worker once its first prediction is out (so
start-up is left out), and samples every thread from outside (the inference
thread included, which cProfile would miss) without pausing it
(``--nonblocking``). The run is extra: its throughput is not counted. The
speedscope file opens at https://www.speedscope.app; the summary beside it lists
the functions that were on CPU most, by own time and with their callees.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream_infer.errors import StreamInferError

__all__ = ["attach_py_spy", "py_spy", "summarize_speedscope"]

_RATE = 200  # samples per second: enough for a run of a few seconds, light on 2 cores


def py_spy() -> str:
    """The py-spy executable: on PATH or beside this Python (a virtualenv's bin)."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not found:
        raise StreamInferError("--profile needs py-spy: pip install 'stream-infer[bench]'")
    return found


def attach_py_spy(out: Path) -> Callable[[int], Callable[[], None]]:
    """A profiler for ``Harness.catch_up``: attach to a pid; the stopper writes ``out``."""
    exe = py_spy()

    def attach(pid: int) -> Callable[[], None]:
        argv = [exe, "record", "--pid", str(pid), "--format", "speedscope"]
        argv += ["--output", str(out), "--rate", str(_RATE), "--nonblocking"]
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def stop() -> None:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)

        return stop

    return attach


def _label(frame: dict[str, Any]) -> str:
    file = str(frame.get("file") or "")
    for marker in ("site-packages/", "stream_infer/", "lib/python3"):
        if marker in file:
            file = (marker if marker == "stream_infer/" else "") + file.split(marker, 1)[1]
            break
    return f"{frame.get('name', '?')} ({file})"  # by function: py-spy gives a frame per line


def summarize_speedscope(path: Path, top: int = 25) -> str:
    """Markdown: samples per thread, then the top functions by own and by total samples."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    # Every sample counts once (py-spy's weights are its sampling interval in seconds).
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    labels = [_label(f) for f in frames]
    threads: Counter[str] = Counter()
    all_samples = 0
    for prof in doc["profiles"]:
        for stack in prof["samples"]:
            if not stack:
                continue
            all_samples += 1
            threads[prof.get("name", "?")] += 1
            own[labels[stack[-1]]] += 1
            for label in {labels[i] for i in stack}:
                total[label] += 1
    if not all_samples:
        return "py-spy recorded no samples.\n"

    def pct(n: int) -> str:
        return f"{100.0 * n / all_samples:.1f}%"

    lines = [f"{all_samples} samples at {_RATE}/s (idle threads left out).", ""]
    lines += ["| thread | samples | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {n} | {pct(n)} |" for name, n in threads.most_common()]
    ours = Counter({k: n for k, n in total.items() if "stream_infer/" in k})
    for title, counts in (
        ("own time", own),
        ("total time (with callees), stream-infer's own functions", ours),
    ):
        lines += ["", f"Top {top} functions by {title}:", "", "| function | share |", "|---|---:|"]
        lines += [f"| `{label}` | {pct(n)} |" for label, n in counts.most_common(top)]
    return "\n".join(lines) + "\n"
