"""A real single-node Apache Kafka (KRaft) for development, tests and CI, without Docker.

The jars are pinned in ``deploy/kafka/pom.xml`` and resolved once by Maven into
a cache outside the repository (keyed by the POM's digest, so a version bump
fetches the new set). The broker runs detached with a pid file in its data
directory, so ``broker stop`` and ``broker status`` work from another shell.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from stream_infer.config import cache_root
from stream_infer.errors import BrokerError

__all__ = [
    "BrokerStatus",
    "Listeners",
    "broker_status",
    "classpath",
    "expect_port",
    "fetch_jars",
    "format_storage",
    "free_port",
    "new_cluster_id",
    "start_broker",
    "stop_broker",
]

_PID_FILE = "broker.pid"
_STATE_FILE = "broker.json"
_READY_FILE = ".complete"


def recipe_dir() -> Path:
    """``deploy/kafka`` of a source checkout, else the copy packed into the wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "deploy" / "kafka", package / "_kafka"):
        if (candidate / "pom.xml").is_file():
            return candidate
    raise BrokerError("the Kafka recipe (deploy/kafka/pom.xml) is missing from this installation")


def fetch_jars(quiet: bool = True) -> Path:
    """Resolve the pinned Kafka jars with Maven (first use only) and return their folder."""
    pom = recipe_dir() / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    lib = cache_root() / "kafka" / digest / "lib"
    if (lib / _READY_FILE).is_file():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven ('mvn') is needed once to fetch the Kafka jars; install it first")
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib-", dir=lib.parent))
    cmd = [
        mvn,
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    if quiet:
        cmd.insert(1, "-q")
    else:
        print(f"fetching Kafka jars into {lib} (first use only)", file=sys.stderr)
    done = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
    if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        tail = (done.stdout or "")[-2000:] + (done.stderr or "")[-2000:] if quiet else ""
        raise BrokerError(f"Maven could not resolve the Kafka jars (exit {done.returncode}) {tail}")
    (staging / _READY_FILE).write_text(digest)
    if lib.exists():  # another process won the race; theirs is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.rename(lib)
    return lib


def classpath() -> str:
    return str(fetch_jars() / "*")


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError("Java 17+ is needed to run the local Kafka broker; 'java' was not found")
    return java


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


# A listener beside PLAINTEXT and CONTROLLER: its name -> (security protocol, port).
Listeners = dict[str, tuple[str, int]]


def _properties(
    data_dir: Path,
    port: int,
    controller_port: int,
    extra: dict[str, str] | None = None,
    listeners: Listeners | None = None,
) -> str:
    more = listeners or {}
    served = "".join(f",{name}://127.0.0.1:{p}" for name, (_, p) in more.items())
    protocols = "".join(f",{name}:{proto}" for name, (proto, _) in more.items())
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        + served,
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}" + served,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT" + protocols,
        "log.dirs": str(data_dir / "kraft"),
        # One node: every internal topic (offsets, transaction state, share state)
        # must live with one replica, or transactions and groups never become ready.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "num.partitions": "1",
        # Topics come from `stream-infer topics apply`; a typo must not create one.
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
        **(extra or {}),  # a secured broker's listeners, TLS and authorizer (securebroker.py)
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def new_cluster_id() -> str:
    """A random cluster id as Kafka writes them: 16 bytes, URL-safe base64, unpadded.

    Like Kafka's own ``Uuid.randomUuid``, ids that begin with ``-`` are drawn again
    (one in 64 would), so that no command line ever reads one as an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def format_storage(props: Path, cluster_id: str, java: str | None = None, cp: str = "") -> None:
    """Format the log folders of ``props`` for ``cluster_id`` (first start only).

    The id is passed as ``--cluster-id=ID``, one word, so that even an id that
    begins with ``-`` is taken as the value it is.
    """
    cmd = [
        java or _java(),
        "-cp",
        cp or classpath(),
        "kafka.tools.StorageTool",
        "format",
        f"--cluster-id={cluster_id}",
        f"--config={props}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BrokerError(f"formatting {props.parent} failed: {done.stdout}{done.stderr}".strip())


@dataclass(frozen=True)
class BrokerStatus:
    data_dir: Path
    running: bool
    pid: int | None = None
    port: int | None = None
    reachable: bool = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def _read_state(data_dir: Path) -> dict[str, int]:
    try:
        return dict(json.loads((data_dir / _STATE_FILE).read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _pid_alive(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is our broker, not an unrelated process that reused the pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True  # no /proc (macOS): trust the pid file
    return b"kafka.Kafka" in cmdline and str(data_dir).encode() in cmdline


def _reachable(port: int, timeout: float = 2.0) -> bool:
    from confluent_kafka.admin import AdminClient  # local: keeps `--help` fast

    # log_level 0: a refused connection is the expected answer while the broker boots.
    admin = AdminClient(
        {"bootstrap.servers": f"127.0.0.1:{port}", "socket.timeout.ms": 1000, "log_level": 0}
    )
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:
        return False


def broker_status(data_dir: str | Path) -> BrokerStatus:
    data = Path(data_dir).resolve()
    state = _read_state(data)
    try:
        pid = int((data / _PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return BrokerStatus(data, running=False, port=state.get("port"))
    if not _pid_alive(pid, data):
        return BrokerStatus(data, running=False, port=state.get("port"))
    port = state.get("port")
    return BrokerStatus(data, True, pid, port, reachable=bool(port) and _reachable(int(port or 0)))


def expect_port(data_dir: str | Path, port: int | None) -> None:
    """Refuse, in one line, when the broker of ``data_dir`` runs on another port than ``port``.

    ``broker stop --port N`` must not stop a broker the user did not mean.
    """
    st = broker_status(data_dir)
    if port is not None and st.running and st.port != port:
        raise BrokerError(
            f"the broker of {st.data_dir} runs on port {st.port}, not {port} "
            f"(use --port {st.port}, or --data-dir for another broker)"
        )


def _log_tail(data_dir: Path, lines: int = 25) -> str:
    chunks = []
    for name in ("kafka.out", "logs/server.log"):
        path = data_dir / name
        if path.is_file():
            text = path.read_text(errors="replace").splitlines()
            wanted = [ln for ln in text if "ERROR" in ln or "Exception" in ln] or text
            chunks.extend(wanted[-lines:])
    return "\n".join(chunks[-lines:])


def start_broker(
    port: int,
    data_dir: str | Path,
    timeout: float = 120.0,
    heap: str | None = None,
    extra: dict[str, str] | None = None,
    listeners: Listeners | None = None,
) -> BrokerStatus:
    """Start (or find already running) a broker and return once it serves requests.

    The storage is formatted on first use only, so a restart on the same data
    directory keeps every topic, offset and transaction. ``extra`` adds or
    overrides broker properties and ``listeners`` adds listeners (``securebroker``
    uses both); ``port`` stays the PLAINTEXT listener this function waits for.
    """
    data = Path(data_dir).resolve()
    current = broker_status(data)
    if current.running:
        if current.port != port:
            raise BrokerError(f"a broker already runs from {data} on port {current.port}")
        if current.reachable:
            return current
    else:
        for wanted in (port, *(p for _, p in (listeners or {}).values())):
            if _port_in_use(wanted):
                raise BrokerError(f"port {wanted} on 127.0.0.1 is already in use")
    lib = fetch_jars()
    java = _java()
    data.mkdir(parents=True, exist_ok=True)
    (data / "logs").mkdir(exist_ok=True)
    if not current.running:
        state = _read_state(data)
        controller_port = state.get("controller_port") or free_port()
        if _port_in_use(int(controller_port)):
            controller_port = free_port()
        props = data / "server.properties"
        props.write_text(_properties(data, port, int(controller_port), extra, listeners))
        cp = str(lib / "*")
        if not (data / "kraft" / "meta.properties").is_file():
            format_storage(props, new_cluster_id(), java, cp)
        heap = heap or os.environ.get("STREAM_INFER_BROKER_HEAP", "768m")
        cmd = [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={data / 'logs'}",
            f"-Dlog4j2.configurationFile={recipe_dir() / 'log4j2.properties'}",
            "-cp",
            cp,
            "kafka.Kafka",
            str(props),
        ]
        with open(data / "kafka.out", "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=data,
            )
        (data / _PID_FILE).write_text(str(proc.pid))
        (data / _STATE_FILE).write_text(
            json.dumps({"port": port, "controller_port": int(controller_port)})
        )
        pid = proc.pid
    else:
        proc, pid = None, int(current.pid or 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            (data / _PID_FILE).unlink(missing_ok=True)
            raise BrokerError(
                f"the broker exited with code {proc.returncode} during start-up:\n{_log_tail(data)}"
            )
        if _reachable(port, timeout=1.0):
            return BrokerStatus(data, True, pid, port, reachable=True)
        time.sleep(0.2)
    stop_broker(data)
    raise BrokerError(
        f"the broker did not accept connections within {timeout:.0f}s:\n{_log_tail(data)}"
    )


def stop_broker(data_dir: str | Path, timeout: float = 30.0, kill: bool = False) -> bool:
    """Stop the broker of ``data_dir``; True if one was running.

    SIGTERM lets Kafka close its logs cleanly (a restart then skips recovery);
    ``kill=True`` sends SIGKILL, for tests of hard failures.
    """
    data = Path(data_dir).resolve()
    status = broker_status(data)
    if not status.running or status.pid is None:
        (data / _PID_FILE).unlink(missing_ok=True)
        return False
    pid = status.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid, data):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
        time.sleep(0.1)
    if _pid_alive(pid, data):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # it just exited: reap it now, leave no zombie behind
    (data / _PID_FILE).unlink(missing_ok=True)
    return True
