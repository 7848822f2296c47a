"""Hot reload: a model file replaced under a running worker is served from the next batch on.

A thread looks at ``model.path`` every ``model.reload_interval_s`` seconds
(``os.stat``: device, inode, size and modification time, following symbolic
links, so both an atomic ``mv`` over the file and a Kubernetes volume whose
``..data`` link is swapped are seen). When the file changed, it loads the new
one on this thread, warms it up, and checks it:

- it must load (a truncated or corrupt file, a pickle, a warm-up failure are
  refused with the loader's own reason);
- it must take the served model's inputs (see ``variants.incompatibility``):
  batches already decoded for the old model go to the new one;
- anything the caller adds (``check``: the drift baseline must fit it, as at
  start-up, or a restart would then fail).

Only then is it handed to ``switch``, which swaps the served variant: the
inference thread picks it up before its next batch. A refusal is one log line
and a counted result; the old model keeps serving and the refused file is not
tried again until it changes. The consuming thread never waits for any of this,
so a reload costs no rebalance.

Replace the file atomically (write beside it, then rename over it). A file
written in place may be read half-written: that attempt is refused, and the
write's last change triggers another.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stream_infer.config import ModelSettings
from stream_infer.inference.model import Model, load_model
from stream_infer.inference.variants import Variant, incompatibility, version_of
from stream_infer.logging import get_logger

__all__ = ["Reloader", "file_state"]

log = get_logger("reload")

FileState = tuple[int, int, int, int] | None


def file_state(path: str | Path) -> FileState:
    """What tells a replaced file from the old one (None: it cannot be read right now)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Reloader:
    """Watches ``model.path`` (plus ``also`` files) and switches to a good replacement.

    ``served`` returns the primary variant in service now; ``check`` may raise
    (with a one-line message) to refuse a model and returns what ``switch``
    needs besides the variant; ``on_result`` is told ``"ok"`` or ``"refused"``.
    """

    def __init__(
        self,
        settings: ModelSettings,
        warmup_rows: int,
        served: Callable[[], Variant],
        switch: Callable[[Variant, Any], None],
        check: Callable[[Model], Any] | None = None,
        also: Sequence[str] = (),
        on_result: Callable[[str], None] = lambda result: None,
        concurrent: bool = False,
    ) -> None:
        self._settings = settings
        self._concurrent = concurrent  # see load_model
        self._warmup_rows = warmup_rows
        self._served = served
        self._switch = switch
        self._check = check
        self._paths = [settings.path, *also]
        self._on_result = on_result
        self._seen = self._states()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stream-infer-reload", daemon=True)

    def _states(self) -> tuple[FileState, ...]:
        return tuple(file_state(p) for p in self._paths)

    def start(self) -> None:
        if self._settings.reload_interval_s > 0:
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        interval = self._settings.reload_interval_s
        while not self._stop.wait(interval):
            try:
                self.poll()
            except Exception as exc:  # this thread must outlive anything a file can do
                log.error("hot reload: unexpected error, will look again: %s", exc)

    def poll(self) -> bool | None:
        """One look: None when nothing changed, else whether the new model now serves."""
        states = self._states()
        if states == self._seen or states[0] is None:
            return None  # unchanged, or the file is away (being replaced): look again later
        return self._attempt(states)

    def _attempt(self, states: tuple[FileState, ...]) -> bool | None:
        path = self._settings.path
        old = self._served()
        started = time.monotonic()
        try:
            model = load_model(self._settings, self._warmup_rows, concurrent=self._concurrent)
        except Exception as exc:
            if self._states() != states:
                return None  # still being written: its last change brings another attempt
            return self._refuse(states, str(exc), old)
        if self._states() != states:
            log.info("hot reload: %s changed again while loading; loading the newer file", path)
            return None
        reason = incompatibility(
            old.model.signature, model.signature, self._settings.reload_outputs
        )
        if reason is not None:
            return self._refuse(states, reason, old)
        extra = None
        if self._check is not None:
            try:
                extra = self._check(model)
            except Exception as exc:
                return self._refuse(states, str(exc), old)
        version = version_of(model, self._settings.version, self._settings.version)
        new = Variant.of("primary", model, self._settings.name, version)
        self._seen = states
        self._switch(new, extra)
        same = (
            " (the file declares no version of its own: stamp one in its metadata to tell them "
            "apart)"
            if version == old.version
            else ""
        )
        log.info(
            "hot reload: %s v%s from %s serves from the next batch on (was v%s; loaded, checked "
            "and warmed up in %.2fs on %s)%s",
            new.name, version, path, old.version, time.monotonic() - started, model.provider, same,
        )  # fmt: skip
        self._on_result("ok")
        return True

    def _refuse(self, states: tuple[FileState, ...], reason: str, old: Variant) -> bool:
        self._seen = states  # not again until the file changes again
        path = self._settings.path
        reason = reason.removeprefix("model.path: ")
        where = "" if reason.startswith(path) else f"{path}: "
        log.error(
            "hot reload refused: %s%s; still serving %s v%s", where, reason, old.name, old.version
        )
        self._on_result("refused")
        return False
