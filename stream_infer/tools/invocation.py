"""How to run this same ``stream-infer`` again from the user's shell, for hints we print.

After the quickstart the command lives in ``.venv/bin``, which is not on the
user's PATH until the virtualenv is activated; a hint that says plain
``stream-infer`` then fails with "command not found". Hints use what works:
plain ``stream-infer`` only when PATH finds this very program.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

__all__ = ["activation", "command_prefix", "runnable_command"]

NAME = "stream-infer"


def _shown(path: Path, cwd: Path) -> str:
    """``path`` relative to ``cwd`` when it lies below it (``.venv/bin/stream-infer``)."""
    try:
        rel = path.relative_to(cwd)
    except ValueError:
        return shlex.quote(str(path))
    return shlex.quote(str(rel) if rel.parent != Path(".") else f"./{rel}")


def runnable_command(argv0: str, executable: str, path_env: str | None, cwd: Path) -> str:
    """The words that run this program from ``cwd`` with ``path_env`` as PATH.

    ``argv0`` is the program as started (``sys.argv[0]``): the console script, or
    ``.../stream_infer/__main__.py`` under ``python -m``; ``executable`` is the
    interpreter (``sys.executable``), whose folder holds the console script of the
    same environment when there is one.
    """
    started = Path(argv0)
    if started.name == NAME and started.is_file():
        script: Path | None = started.absolute()
    else:
        sibling = Path(executable).absolute().parent / NAME
        script = sibling if sibling.is_file() else None
    found = shutil.which(NAME, path=path_env)
    if script is not None:
        if found is not None and Path(found).resolve() == script.resolve():
            return NAME
        return _shown(script, cwd.absolute())
    return f"{shlex.quote(executable)} -m stream_infer"


def command_prefix() -> str:
    """:func:`runnable_command` for this process."""
    return runnable_command(sys.argv[0], sys.executable, os.environ.get("PATH"), Path.cwd())


def activation(command: str, cwd: Path | None = None) -> str | None:
    """``source .venv/bin/activate`` when ``command`` is a virtualenv's script off PATH."""
    if command == NAME or " -m " in command:
        return None
    script = Path(shlex.split(command)[0])
    activate = script.parent / "activate"
    if not (cwd or Path.cwd()).joinpath(activate).is_file():
        return None
    return f"source {shlex.quote(str(activate))}"
