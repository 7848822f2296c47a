"""Several workers in one container: ``stream-infer run --processes N``.

One worker process does not use every core at full catch-up: its loop thread
(consuming, decoding, serving delivery reports) is the busiest, and the GIL
keeps the others from helping it. Two processes in one group drained 1.6 to 2
times one process's rate on the 2-core machine (README, Performance), so a
container may run N of them. Each child is an ordinary ``stream-infer run``:
one process, one group member, its own consumer, producer and model, as the
SPEC has it. This parent only starts them, forwards signals, and ends them
all when one ends, so that the orchestrator sees one container that either
works or exits (and restarts it) instead of a container that is half alive.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from stream_infer.config import ENV_PREFIX, Settings
from stream_infer.logging import get_logger

__all__ = ["child_env", "run_processes"]

log = get_logger("processes")

_POLL_S = 0.2  # how often the parent looks at its children (it has nothing else to do)
_PR_SET_PDEATHSIG = 1  # prctl(2)


def child_env(settings: Settings, index: int, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of child ``index``: its own metrics port and, if set, its own id.

    A ``processing.worker_id`` set on purpose is a static member's identity
    (``group.instance.id``); N processes sharing it would fence each other, so
    each gets ``<id>-<index>``, stable across restarts like the id itself.
    Without one, each child's default id has its own pid. ``metrics.port`` P
    becomes P + index (0 stays 0: any free port, logged by each child), and so
    does a Faust web port; a Faust data folder gets a subfolder per child.
    """
    env = dict(base)
    port = settings.metrics.port
    env[f"{ENV_PREFIX}METRICS__PORT"] = str(port + index if port else 0)
    static = settings.processing.static_id
    if static is not None:
        env[f"{ENV_PREFIX}PROCESSING__WORKER_ID"] = f"{static}-{index}"
    faust = settings.faust  # --runtime faust: its own folder and web port too
    if faust.data_dir:
        env[f"{ENV_PREFIX}FAUST__DATA_DIR"] = str(Path(faust.data_dir) / str(index))
    if faust.web_port is not None:
        env[f"{ENV_PREFIX}FAUST__WEB_PORT"] = str(faust.web_port + index)
    return env


def run_processes(
    settings: Settings, count: int, config: Path | None, runtime: str, stop_timeout_s: float
) -> int:
    """Run ``count`` workers until a signal stops them or one of them ends; the exit code.

    0 when a signal stopped every child cleanly, else the first non-zero code a
    child ended with, in the order they ended (a child ended by a signal counts
    as 128 + the signal, as a shell reports it). A child that ends without being
    told to ends the container with its code, 1 if that was 0. A child still
    running ``stop_timeout_s`` after the stop began is killed.
    """
    for name, port in (
        ("metrics.port", settings.metrics.port),
        ("faust.web_port", settings.faust.web_port),
    ):
        if port and port + count - 1 > 65535:
            raise ValueError(f"{name} {port} + {count} processes passes 65535")
    argv = [sys.executable, "-m", "stream_infer", "run", "--runtime", runtime]
    if config is not None:
        argv += ["--config", str(config)]
    children: list[subprocess.Popen[bytes]] = []
    signals: list[int] = []  # what this parent received, in order
    sent: dict[int, int] = {}  # child pid -> signals it was sent

    def relay() -> None:
        """Each child gets each signal the parent got, once (a child already stopped counts)."""
        for child in children:
            if child.poll() is None and sent.get(child.pid, 0) < len(signals):
                sent[child.pid] = len(signals)
                child.send_signal(signals[-1])  # a second one: the worker ends at once

    def forward(signum: int, _frame: FrameType | None) -> None:
        signals.append(signum)
        relay()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(count):
        children.append(
            subprocess.Popen(
                argv,
                env=child_env(settings, index, os.environ),
                # Signals reach the children through this parent only, once each: a Ctrl-C
                # to the terminal's process group would otherwise arrive twice, and a
                # worker takes a second signal as "exit now".
                start_new_session=True,
                preexec_fn=_die_with_parent,  # safe: this parent runs no threads
            )
        )
    relay()  # a signal that came while they were starting reaches the later ones too
    pids = ", ".join(str(c.pid) for c in children)
    log.info("started %d worker processes (pids %s)", count, pids)
    codes: list[int] = []  # in the order the children ended
    seen: set[int] = set()
    killed: set[int] = set()
    stop_began: float | None = None
    on_its_own: int | None = None  # the code of a child that ended without being told to
    while True:
        for child in children:
            if child.poll() is not None and child.pid not in seen:
                seen.add(child.pid)
                codes.append(_code(child.returncode))
        running = [c for c in children if c.returncode is None]
        if not running:
            break
        if stop_began is None and (signals or codes):
            stop_began = time.monotonic()
            if not signals:  # one ended on its own: the container is no longer whole
                on_its_own = codes[0]
                log.error("a worker process ended with code %d; stopping the others", codes[0])
                for child in running:
                    sent[child.pid] = 1  # so that the orchestrator's SIGTERM is not a second
                    child.send_signal(signal.SIGTERM)
        elif stop_began is not None and time.monotonic() - stop_began > stop_timeout_s:
            for child in running:
                if child.pid not in killed:
                    killed.add(child.pid)
                    log.error("worker process %d did not stop in %.0fs; killing it",
                              child.pid, stop_timeout_s)  # fmt: skip
                    child.kill()
        time.sleep(_POLL_S)
    if on_its_own is not None:
        return on_its_own or 1  # even a clean exit nobody asked for leaves the container short
    return next((code for code in codes if code), 0)


def _code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _die_with_parent() -> None:
    """In the child, before it runs: SIGTERM it if the parent dies (Linux; kill -9 included).

    Without it a parent killed outright would leave its workers running, holding
    their partitions, outside anything that supervises them.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the orchestrator's teardown remains
        pass
