"""Print the run-time requirements of stream-infer for one image flavour, one per line.

pyproject.toml chooses onnxruntime-gpu on Linux x86_64 and onnxruntime elsewhere, through
environment markers. The CPU image runs on Linux x86_64 but wants onnxruntime (no CUDA
libraries, a fraction of the size), so the Dockerfile installs the wheel with ``--no-deps``
and these requirements beside it, read from pyproject.toml so that they never drift apart:

    python requirements.py cpu [--extra demo] [--pyproject FILE]   # with onnxruntime
    python requirements.py gpu [--extra demo] [--pyproject FILE]   # with onnxruntime-gpu
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["requirements"]

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?")
_RUNTIMES = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}


def _name(requirement: str) -> tuple[str, str]:
    """The normalised project name and the rest (extras, version, markers)."""
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read requirement {requirement!r}")
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name, requirement[match.end(1) :]


def _expand(project: dict[str, Any], extras: list[str]) -> list[str]:
    """Dependencies plus those of ``extras``, with self-references (``pkg[demo]``) resolved."""
    own = _name(project["name"])[0]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = list(project.get("dependencies", []))
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise ValueError(f"pyproject.toml has no extra {extra!r}")
        seen.add(extra)
        for req in optional[extra]:
            name, rest = _name(req)
            if name == own:
                pending.extend(e.strip() for e in rest.strip()[1:].split("]")[0].split(","))
            else:
                out.append(req)
    return out


def requirements(pyproject: Path, flavour: str, extras: list[str]) -> list[str]:
    """Requirements for ``flavour`` ("cpu" or "gpu"): one onnxruntime package, marker-free."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    wanted = _RUNTIMES[flavour]
    out, found = [], False
    for req in _expand(project, extras):
        name, rest = _name(req)
        if name in _RUNTIMES.values():
            if name == wanted:
                found = True
                out.append(name + rest.split(";", 1)[0].rstrip())
            continue
        out.append(req)
    if not found:
        raise ValueError(f"pyproject.toml does not list {wanted}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flavour", choices=sorted(_RUNTIMES))
    parser.add_argument("--extra", action="append", default=[], help="add an extra's deps")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    try:
        lines = requirements(args.pyproject, args.flavour, args.extra)
    except (OSError, ValueError, KeyError) as exc:
        print(f"requirements.py: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
