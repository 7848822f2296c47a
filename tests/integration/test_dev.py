"""``stream-infer dev`` stops everything it started on any of the usual signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.integration.conftest import ROOT, unique, wait_for, wait_for_log


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_stops_the_worker_the_producer_and_the_broker(
    tmp_path: Path, signum: signal.Signals
) -> None:
    port = free_port()  # nothing answers there, so dev starts its own broker
    cfg = tmp_path / "dev.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": f"127.0.0.1:{port}", "group_id": unique("dev")},
                "model": {"path": str(ROOT / "models" / "demo.onnx")},
                "metrics": {"port": 0},
            }
        )
    )
    out = tmp_path / "dev.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream_infer", "dev", "--config", str(cfg), "--rate", "100"],
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    pid_file = tmp_path / ".stream-infer" / "broker" / "broker.pid"
    broker: Path | None = None
    try:
        wait_for_log(out, "starting the local Kafka broker", timeout=60)
        pos = wait_for_log(out, "Ctrl-C to stop", timeout=240)
        broker = Path(f"/proc/{int(pid_file.read_text())}")
        assert _answers(port)
        wait_for_log(out, "produced", timeout=30, after=pos)  # the first progress line
        progress = out.read_text()
        assert re.search(r"in \d+/s, out \d+/s, lag \d+, dead letters \d+", progress), progress
        # The metrics URL it printed answers, with the demo's drift gauges (its baseline).
        url = re.search(r"metrics: +(http://\S+/metrics)", progress)
        assert url, progress
        body = urllib.request.urlopen(url.group(1), timeout=5).read().decode()
        assert "stream_infer_model_info" in body and "stream_infer_feature_drift_psi" in body
        proc.send_signal(signum)
        assert proc.wait(90) == 0, out.read_text()[-3000:]
        text = out.read_text()
        assert f"{signum.name}: stopping" in text
        done = re.search(r"done: produced (\d+), predictions (\d+), dead letters (\d+)", text)
        assert done, text[-3000:]
        produced, predictions, dead = map(int, done.groups())
        assert produced > 0 and predictions + dead == produced
        assert "local broker stopped" in text
        # A fresh broker's coordinator-load retries are not warnings (DEBUG), nor any flood.
        noisy = [ln for ln in text.splitlines() if "librdkafka" in ln and "WARNING" in ln]
        assert not noisy, noisy
        wait_for(lambda: not broker.exists(), 10, "the broker process to be gone")
        wait_for(lambda: not _answers(port), 5, "the broker's port to close")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if broker is not None and b"kafka.Kafka" in _cmdline(broker):
            os.kill(int(broker.name), signal.SIGKILL)  # never leak a broker from a failed test


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""
