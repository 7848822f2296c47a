"""What the figures were measured on: the machine, the libraries and the broker."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["describe_machine", "machine_line"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _kafka_version() -> str | None:
    """The Kafka release of the pinned jars (what `stream-infer broker start` runs)."""
    try:
        from stream_infer.tools.devbroker import fetch_jars

        for jar in fetch_jars().glob("kafka_2.13-*.jar"):
            name = jar.name.removeprefix("kafka_2.13-").removesuffix(".jar")
            if name[:1].isdigit() and "-" not in name:
                return name
    except Exception:
        return None
    return None


def describe_machine(bootstrap: str, own_broker: bool, storage: str = "") -> dict[str, Any]:
    import confluent_kafka
    import psutil

    ort_dist = next((d for d in ("onnxruntime-gpu", "onnxruntime") if _version(d)), "onnxruntime")
    kafka = _kafka_version()
    broker = (
        f"Apache Kafka {kafka}, KRaft single node, started by bench on this machine"
        + (f", its log {storage}" if storage else "")
        if own_broker
        else f"external broker at {bootstrap} (pinned local jars: Kafka {kafka or '?'})"
    )
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "confluent_kafka": _version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "onnxruntime": f"{ort_dist} {_version(ort_dist)}",
        "numpy": _version("numpy"),
        "orjson": _version("orjson"),
        "faust_streaming": _version("faust-streaming"),
        "aiokafka": _version("aiokafka"),
        "stream_infer": _version("stream-infer"),
        "broker": broker,
    }


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs ({m['physical_cores']} cores), "
        f"{m['memory_gib']} GiB, {m['os']}; Python {m['python']}, confluent-kafka "
        f"{m['confluent_kafka']} (librdkafka {m['librdkafka']}), {m['onnxruntime']}, numpy "
        f"{m['numpy']}, orjson {m['orjson']}, faust-streaming {m['faust_streaming']}, aiokafka "
        f"{m['aiokafka']}; broker: {m['broker']}"
    )
