"""Hints name a command that runs from the user's shell, not one that PATH cannot find."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from stream_infer.tools.invocation import activation, runnable_command


def _venv(root: Path) -> Path:
    """A folder shaped like a virtualenv's bin/: python, activate and the console script."""
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "stream-infer"):
        (bin_dir / name).write_text('#!/bin/sh\necho ran "$0" "$@"\n')
        (bin_dir / name).chmod(0o755)
    (bin_dir / "activate").write_text("# sourced\n")
    return bin_dir


def test_script_off_path_is_named_relative_to_the_cwd(tmp_path: Path) -> None:
    bin_dir = _venv(tmp_path)
    cmd = runnable_command(
        str(bin_dir / "stream-infer"), str(bin_dir / "python"), "/usr/bin", tmp_path
    )
    assert cmd == ".venv/bin/stream-infer"
    assert activation(cmd, tmp_path) == "source .venv/bin/activate"
    # ... and the words really run it from that folder (with the user's PATH).
    ran = subprocess.run(
        ["/bin/sh", "-c", f"{cmd} lag"], cwd=tmp_path, env={**os.environ, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert ran.stdout.startswith("ran .venv/bin/stream-infer lag")


def test_plain_name_when_path_finds_this_very_script(tmp_path: Path) -> None:
    bin_dir = _venv(tmp_path)
    path = f"{bin_dir}:/usr/bin"
    assert runnable_command(str(bin_dir / "stream-infer"), "/usr/bin/python3", path, tmp_path) == (
        "stream-infer"
    )
    assert activation("stream-infer") is None


def test_another_stream_infer_on_path_is_not_taken_for_this_one(tmp_path: Path) -> None:
    ours = _venv(tmp_path / "project")
    other = _venv(tmp_path / "elsewhere")
    cmd = runnable_command(str(ours / "stream-infer"), str(ours / "python"), str(other), tmp_path)
    assert cmd == "project/.venv/bin/stream-infer"


def test_python_dash_m_uses_the_script_beside_the_interpreter(tmp_path: Path) -> None:
    bin_dir = _venv(tmp_path / "p")
    main = "/src/stream_infer/__main__.py"
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    cmd = runnable_command(main, str(bin_dir / "python"), "/usr/bin", elsewhere)
    assert cmd == str(bin_dir / "stream-infer")  # not below the cwd: absolute
    assert activation(cmd, elsewhere) == f"source {bin_dir / 'activate'}"


def test_python_dash_m_without_a_script_falls_back_to_the_interpreter(tmp_path: Path) -> None:
    cmd = runnable_command("/src/stream_infer/__main__.py", "/opt/py/bin/python3", "", tmp_path)
    assert cmd == "/opt/py/bin/python3 -m stream_infer"
    assert activation(cmd, tmp_path) is None
