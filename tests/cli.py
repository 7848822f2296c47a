"""The command line as a user runs it: ``python -m stream_infer ARGS`` in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    stdin: bytes | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI and capture its output; ``env`` is its whole environment (default: ours)."""
    return subprocess.run(
        [sys.executable, "-m", "stream_infer", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=dict(os.environ if env is None else env),
        check=False,
    )
