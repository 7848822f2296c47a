"""The README's Faust example is real: the block equals ``examples/faust_app.py``, and it runs.

The example is started the way a Faust user starts an app (``faust -A ... worker``)
against the real broker, fed good and bad events, and stopped with SIGTERM: each
good event gets its prediction, each bad one its dead letter, and the committed
offsets reach the end of the input.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from stream_infer.ops.lag import group_lag
from tests.integration.conftest import (
    ROOT,
    events,
    read,
    send,
    topic_size,
    wait_for,
    write_config,
)

EXAMPLE = ROOT / "examples" / "faust_app.py"


def readme_block(marker: str) -> str:
    """The fenced block that follows ``marker`` in the README."""
    text = (ROOT / "README.md").read_text()
    at = text.index(marker)
    match = re.compile(r"```python\n(.*?)```", re.DOTALL).search(text, at)
    assert match is not None, f"no python block after {marker}"
    return match.group(1)


def test_the_readme_shows_the_example_file_verbatim() -> None:
    assert readme_block("<!-- example: examples/faust_app.py -->") == EXAMPLE.read_text()


def test_the_example_app_predicts_dead_letters_and_commits(
    kafka, make_settings, linear_model: Path, tmp_path: Path
) -> None:
    settings = make_settings(linear_model, partitions=2)
    config = write_config(settings, tmp_path / "stream-infer.yaml")
    n = 300
    keys, values = events(n)
    values[17] = b"not json"
    values[200] = orjson.dumps({"id": 200, "features": [1, 2]})  # wrong shape
    send(kafka, settings.topics.inputs[0], values, keys)
    log = tmp_path / "faust.log"
    command = [
        sys.executable, "-m", "faust", "--datadir", str(tmp_path / "data"),
        "-A", "examples.faust_app", "worker", "--without-web", "--loglevel", "warn",
    ]  # fmt: skip
    env = {**os.environ, "STREAM_INFER_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: proc.poll() is not None or topic_size(kafka, settings.topics.output) >= n - 2,
            90,
            "the example's predictions",
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        predictions = read(kafka, settings.topics.output, n - 2, timeout=30)
        dead = read(kafka, settings.topics.dead_letter, 2, timeout=30)
        ids = sorted(r["value"]["id"] for r in predictions)
        assert ids == sorted(set(range(n)) - {17, 200}), log.read_text()[-3000:]
        stages = {r["key"]: r["headers"]["dlq.error.stage"] for r in dead}
        assert stages == {"k17": "decode", "k200": "validate"}

        def committed() -> int:
            lag = group_lag(
                {"bootstrap.servers": kafka}, settings.kafka.group_id, settings.topics.inputs
            )
            return sum(p.lag for p in lag)

        wait_for(lambda: committed() == 0, 30, "the example's commits to reach the end")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
