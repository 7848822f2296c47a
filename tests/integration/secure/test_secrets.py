"""A password never shows: not in the log, a dead letter, /metrics, an error line or --help.

The worker runs as its own process (``stream-infer run``), with the password in
the environment the way a Kubernetes secretKeyRef would set it, at DEBUG level.
Everything it printed and produced is then searched for the password.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from stream_infer.cli import app
from stream_infer.config import Settings
from stream_infer.tools.securebroker import USER, SecureBroker
from tests.cli import run_cli
from tests.conftest import free_port
from tests.integration.conftest import ROOT, events, read, send, wait_for_log, write_config
from tests.integration.secure.conftest import SecureSettings, committed

pytestmark = pytest.mark.slow


def _env(secure_broker: SecureBroker, password: str) -> dict[str, str]:
    common = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": USER,
        "sasl.password": password,
        "ssl.ca.location": str(secure_broker.ca_file),
    }
    return {**os.environ, "STREAM_INFER_KAFKA__COMMON": json.dumps(common)}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env)


def _commands(group: Any, prefix: list[str]) -> list[list[str]]:
    """Every command and sub-command of the CLI, as the words that name it."""
    found = []
    for name, command in group.commands.items():
        found.append([*prefix, name])
        if hasattr(command, "commands"):
            found += _commands(command, [*prefix, name])
    return found


def test_the_password_shows_nowhere(
    secure_broker: SecureBroker,
    make_secure_settings: SecureSettings,
    linear_model: Path,
    tmp_path: Path,
) -> None:
    password = secure_broker.password(USER)
    settings = make_secure_settings(
        linear_model, logging={"level": "DEBUG"}, metrics={"port": free_port()}
    )
    config = write_config(settings, tmp_path / "worker.yaml")
    # The environment carries the credentials (as a secretKeyRef would), the file none.
    raw = yaml.safe_load(config.read_text())
    raw["kafka"]["common"], raw["kafka"]["secrets"] = {}, {}
    config.write_text(yaml.safe_dump(raw))
    env = _env(secure_broker, password)
    admin = secure_broker.admin_bootstrap
    keys, values = events(30)
    send(admin, settings.topics.inputs[0], [*values, b"{oops"], [*keys, b"poison"])
    log = tmp_path / "worker.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream_infer", "run", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        )  # fmt: skip
    try:
        wait_for_log(log, "metrics on ")
        url = re.search(r"metrics on (http://[^/\s]+)", log.read_text())
        assert url is not None
        deadline = time.monotonic() + 60
        while sum(committed(admin, settings).values()) < 31:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        pages = {
            path: urllib.request.urlopen(url.group(1) + path, timeout=10).read()
            for path in ("/metrics", "/healthz", "/readyz")
        }
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert b"stream_infer_predictions_total" in pages["/metrics"]
    dead = read(admin, settings.topics.dead_letter, 1)
    predictions = read(admin, settings.topics.output, 30)
    assert len(dead) == 1 and len(predictions) == 30
    text = log.read_text()
    assert "DEBUG" in text  # the most talkative level was on
    assert password not in text
    for record in dead + predictions:
        assert password not in json.dumps(record)
    for body in pages.values():
        assert password.encode() not in body


def test_error_lines_and_help_never_show_the_password(secure_broker: SecureBroker) -> None:
    password = secure_broker.password(USER)
    env = _env(secure_broker, password)
    # A bad value next to the password, and a password of the wrong type.
    broken = json.loads(env["STREAM_INFER_KAFKA__COMMON"])
    for common in (
        {**broken, "sasl.username": ""},
        {**broken, "sasl.password": [password]},
        {**broken, "ssl.ca.location": "/nowhere/ca.crt"},
    ):
        result = _cli("run", env={**env, "STREAM_INFER_KAFKA__COMMON": json.dumps(common)})
        assert result.returncode == 1, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert password not in result.stdout + result.stderr
    commands = _commands(typer.main.get_command(app), [])
    assert ["broker", "start"] in commands and ["acls"] in commands
    for command in [[], *commands]:
        result = _cli(*command, "--help", env=env)
        assert result.returncode == 0, (command, result.stderr)
        assert password not in result.stdout + result.stderr, command


def test_a_wrong_password_is_one_line_and_exit_1(
    secure_broker: SecureBroker,
    make_secure_settings: SecureSettings,
    linear_model: Path,
    tmp_path: Path,
) -> None:
    settings = make_secure_settings(linear_model)
    config = write_config(settings, tmp_path / "worker.yaml")
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong-password-123")
    env: dict[str, Any] = {
        **os.environ,
        "STREAM_INFER_KAFKA__SECRETS": json.dumps({"sasl.password": str(wrong)}),
    }
    started = time.monotonic()
    result = _cli("run", "--config", str(config), env=env)
    took = time.monotonic() - started
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "stream-infer: error: SASL authentication failed for User:stream-infer (SCRAM-SHA-512) at "
        f"{secure_broker.bootstrap}: "
    ), result.stderr
    assert "not answering yet" not in result.stderr and "cannot reach" not in result.stderr
    assert "wrong-password-123" not in result.stdout + result.stderr
    assert took < 30, f"{took:.0f}s"


def test_acls_command_prints_and_applies_the_table(
    secure_broker: SecureBroker, make_secure_settings: SecureSettings, linear_model: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    def nothing(s: Settings) -> dict[str, tuple[str, ...]]:
        """User:stream-infer gets no grant here: this test grants User:other."""
        names = (*s.topics.inputs, s.topics.output, s.topics.dead_letter, s.kafka.group_id)
        return dict.fromkeys((*names, f"stream-infer-{s.kafka.group_id}-"), ())

    settings = make_secure_settings(linear_model, guarantee="exactly_once", drop=nothing)
    config = write_config(settings, tmp_path / "worker.yaml")
    env = {**os.environ}
    printed = _cli("acls", "--config", str(config), "--principal", "User:other", env=env)
    assert printed.returncode == 0 and len(printed.stdout.splitlines()) == 5
    assert settings.topics.output in printed.stdout and "--resource-pattern-type prefixed" in (
        printed.stdout
    )
    admin = secure_broker.admin_bootstrap
    applied = _cli("acls", "--config", str(config), "--principal", "User:other",
                   "--apply", admin, env=env)  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    # READ+DESCRIBE, WRITE+DESCRIBE twice, READ, WRITE+DESCRIBE on the transactional ids.
    assert applied.stdout.strip() == f"created 9 ACL bindings for User:other through {admin}"
    everything = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, "User:other", None,
        AclOperation.ANY, AclPermissionType.ANY,
    )  # fmt: skip
    client = AdminClient({"bootstrap.servers": admin})
    found = client.describe_acls(everything).result(timeout=30)
    names = {(b.name, b.operation.name) for b in found}
    assert (settings.topics.output, "WRITE") in names
    assert (settings.kafka.group_id, "READ") in names
    assert (f"stream-infer-{settings.kafka.group_id}-", "WRITE") in names
    assert printed.stdout.count("User:other") == 5
