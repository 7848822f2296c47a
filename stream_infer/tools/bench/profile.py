"""``bench --profile``: one extra catch-up run of the worker under py-spy, and what it says.

py-spy samples every thread of the running worker from outside (the inference
thread included, which cProfile would miss) without pausing it
(``--nonblocking``). The run is extra: its throughput is not counted. The
speedscope file opens at https://www.speedscope.app; the summary beside it lists
the functions that were on CPU most, by own time and with their callees.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from stream_infer.errors import StreamInferError

__all__ = ["py_spy", "py_spy_argv", "summarize_speedscope"]

_RATE = 200  # samples per second: enough for a run of a few seconds, light on 2 cores


def py_spy() -> str:
    """The py-spy executable: on PATH or beside this Python (a virtualenv's bin)."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not found:
        raise StreamInferError("--profile needs py-spy: pip install 'stream-infer[bench]'")
    return found


def py_spy_argv(out: Path) -> Any:
    exe = py_spy()

    def wrap(argv: list[str]) -> list[str]:
        return [
            exe, "record", "--format", "speedscope", "--output", str(out),
            "--rate", str(_RATE), "--nonblocking", "--", *argv,
        ]  # fmt: skip

    return wrap


def _label(frame: dict[str, Any]) -> str:
    file = str(frame.get("file") or "")
    for marker in ("site-packages/", "stream_infer/", "lib/python3"):
        if marker in file:
            file = (marker if marker == "stream_infer/" else "") + file.split(marker, 1)[1]
            break
    line = frame.get("line")
    return f"{frame.get('name', '?')} ({file}{':' + str(line) if line else ''})"


def summarize_speedscope(path: Path, top: int = 25) -> str:
    """Markdown: samples per thread, then the top functions by own and by total samples."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    own: Counter[int] = Counter()
    total: Counter[int] = Counter()
    threads: Counter[str] = Counter()
    all_samples = 0
    for prof in doc["profiles"]:
        weights = prof.get("weights") or [1] * len(prof["samples"])
        for stack, w in zip(prof["samples"], weights, strict=True):
            if not stack:
                continue
            all_samples += w
            threads[prof.get("name", "?")] += w
            own[stack[-1]] += w
            for idx in set(stack):
                total[idx] += w
    if not all_samples:
        return "py-spy recorded no samples.\n"

    def pct(n: int) -> str:
        return f"{100.0 * n / all_samples:.1f}%"

    lines = [f"{all_samples} samples at {_RATE}/s (idle threads left out).", ""]
    lines += ["| thread | samples | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {n} | {pct(n)} |" for name, n in threads.most_common()]
    for title, counts in (("own time", own), ("total time (with callees)", total)):
        lines += ["", f"Top {top} functions by {title}:", "", "| function | share |", "|---|---:|"]
        lines += [f"| `{_label(frames[i])}` | {pct(n)} |" for i, n in counts.most_common(top)]
    return "\n".join(lines) + "\n"
