"""The worker on a secured cluster: SASL_SSL with SCRAM, mTLS, ACLs, and what it says of failures.

Every failure must stop the worker with one line that names the cause, the
principal and the resource, and commit nothing past the event whose outputs
could not be written.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from stream_infer.config import Settings
from stream_infer.runtimes.worker import Worker
from stream_infer.tools.securebroker import SecureBroker, make_certificate
from tests.integration.conftest import events, read, running, send, wait_for
from tests.integration.secure.conftest import SecureSettings, committed

pytestmark = pytest.mark.slow


def _failure(settings: Settings, timeout: float = 60.0) -> BaseException:
    """Run a worker that is expected to stop on its own; return what stopped it."""
    worker = Worker(settings)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        worker.stop()
        thread.join(30)
        raise AssertionError(f"the worker did not stop on its own within {timeout}s")
    assert errors, "the worker stopped without an error"
    import traceback

    traceback.print_exception(errors[0])
    return errors[0]


@pytest.mark.parametrize(
    ("guarantee", "mtls"),
    [("at_least_once", False), ("exactly_once", False), ("at_least_once", True)],
    ids=["scram-at-least-once", "scram-exactly-once", "mtls"],
)
def test_pipeline_over_a_secured_listener(
    secure_broker: SecureBroker,
    make_secure_settings: SecureSettings,
    linear_model: Path,
    guarantee: str,
    mtls: bool,
) -> None:
    settings = make_secure_settings(linear_model, guarantee=guarantee, mtls=mtls)
    admin = secure_broker.admin_bootstrap
    keys, values = events(40)
    send(admin, settings.topics.inputs[0], [*values, b"not json"], [*keys, b"poison"])
    with running(settings) as worker:
        wait_for(lambda: worker.counts() == (40, 1), 60, "40 predictions, 1 dead letter", worker)
        wait_for(
            lambda: sum(committed(admin, settings).values()) == 41, 30, "offsets committed", worker
        )
    predictions = read(admin, settings.topics.output, 40)
    assert sorted(p["value"]["id"] for p in predictions) == list(range(40))
    (dead,) = read(admin, settings.topics.dead_letter, 1)
    assert dead["key"] == "poison"


def test_wrong_password_is_said_at_once(
    secure_broker: SecureBroker,
    make_secure_settings: SecureSettings,
    linear_model: Path,
    tmp_path: Path,
) -> None:
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password\n")
    settings = make_secure_settings(linear_model, kafka={"secrets": {"sasl.password": str(wrong)}})
    started = time.monotonic()
    exc = _failure(settings, timeout=30)
    took = time.monotonic() - started
    text = str(exc)
    assert text.startswith("SASL authentication failed for User:stream-infer (SCRAM-SHA-512)")
    assert secure_broker.bootstrap in text and "invalid credentials" in text
    assert "not-the-password" not in text
    assert took < 15, f"took {took:.1f}s to say the password is wrong"
    assert committed(secure_broker.admin_bootstrap, settings) == {}


def test_untrusted_certificate_names_the_ca_file(
    make_secure_settings: SecureSettings, linear_model: Path, tmp_path: Path
) -> None:
    make_certificate(tmp_path, "other-ca", "another CA", None)
    other = tmp_path / "other-ca.crt"
    settings = make_secure_settings(linear_model, kafka={"common": {"ssl.ca.location": str(other)}})
    exc = _failure(settings, timeout=30)
    assert "TLS handshake with" in str(exc)
    assert "certificate verify failed" in str(exc)
    assert f"CA file: {other}" in str(exc)


@pytest.mark.parametrize(
    ("missing", "guarantee", "expected"),
    [
        ("input-read", "at_least_once", "may not read topic '{input}' (topics.inputs)"),
        ("input-all", "at_least_once", "may not describe topic '{input}' (topics.inputs)"),
        ("group", "at_least_once", "consumer group '{group}'"),
        ("output", "at_least_once", "may not write to topic '{output}' (topics.output)"),
        ("dead-letter", "at_least_once", "may not write to topic '{dlq}' (topics.dead_letter)"),
        ("output", "exactly_once", "topic"),
        (
            "transactional-id",
            "exactly_once",
            "transactional id 'stream-infer-{group}-",
        ),
    ],
)
def test_a_missing_acl_stops_the_worker_with_one_line(
    secure_broker: SecureBroker,
    make_secure_settings: SecureSettings,
    linear_model: Path,
    missing: str,
    guarantee: str,
    expected: str,
) -> None:
    def drop(s: Settings) -> dict[str, tuple[str, ...]]:
        return {
            "input-read": {s.topics.inputs[0]: ("READ",)},
            "input-all": {s.topics.inputs[0]: ()},
            "group": {s.kafka.group_id: ()},
            "output": {s.topics.output: ("WRITE",)},
            "dead-letter": {s.topics.dead_letter: ("WRITE",)},
            "transactional-id": {f"stream-infer-{s.kafka.group_id}-": ()},
        }[missing]

    settings = make_secure_settings(linear_model, guarantee, drop=drop, partitions=1)
    admin = secure_broker.admin_bootstrap
    keys, values = events(20)
    # The poison event first: its dead letter is the first output of the only partition.
    send(admin, settings.topics.inputs[0], [b"not json", *values], [b"poison", *keys])
    exc = _failure(settings)
    text = str(exc)
    names = {
        "input": settings.topics.inputs[0],
        "output": settings.topics.output,
        "dlq": settings.topics.dead_letter,
        "group": settings.kafka.group_id,
    }
    assert text.startswith("not authorized: User:stream-infer (SCRAM-SHA-512) may not "), text
    assert expected.format(**names) in text, text
    assert "\n" not in text
    if missing == "transactional-id":
        prefix = f"stream-infer-{settings.kafka.group_id}-"
        assert text.endswith(
            f"with the prefix '{prefix}' (see the README's ACL table) (initialising transactions)"
        ), text
    # Nothing committed past the first event (whose outputs could not all be written).
    assert committed(admin, settings) == {}


@pytest.mark.parametrize(
    ("topic", "guarantee"),
    [("output", "at_least_once"), ("dead_letter", "at_least_once"), ("output", "exactly_once")],
)
def test_write_revoked_while_running_stops_it_and_commits_nothing_after(
    secure_broker: SecureBroker,
    make_secure_settings: SecureSettings,
    linear_model: Path,
    topic: str,
    guarantee: str,
) -> None:
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    settings = make_secure_settings(linear_model, guarantee, partitions=1)
    admin = secure_broker.admin_bootstrap
    keys, values = events(10)
    send(admin, settings.topics.inputs[0], values, keys)
    worker = Worker(settings)
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run(worker, errors), daemon=True)
    thread.start()
    wait_for(lambda: sum(committed(admin, settings).values()) == 10, 60, "first commit", worker)
    name = getattr(settings.topics, topic)
    revoke = AclBindingFilter(
        ResourceType.TOPIC, name, ResourcePatternType.LITERAL, None, None,
        AclOperation.WRITE, AclPermissionType.ANY,
    )  # fmt: skip
    client = AdminClient({"bootstrap.servers": admin})  # kept alive until the futures resolve
    for future in client.delete_acls([revoke]).values():
        assert future.result(timeout=30)
    poison = [b"not json"] if topic == "dead_letter" else []
    more_keys, more = events(10, start=10)
    send(admin, settings.topics.inputs[0], [*poison, *more], [*poison, *more_keys])
    thread.join(60)
    assert not thread.is_alive(), "the worker did not stop"
    assert errors, "the worker stopped without an error"
    key = "dead_letter" if topic == "dead_letter" else "output"
    assert f"may not write to topic '{name}' (topics.{key})" in str(errors[0]), errors[0]
    assert str(errors[0]).startswith("not authorized: User:stream-infer")
    assert sum(committed(admin, settings).values()) == 10  # nothing past the refused outputs


def _run(worker: Worker, errors: list[BaseException]) -> None:
    try:
        worker.run()
    except BaseException as exc:
        errors.append(exc)
