"""dev's settings: a stable worker id for static membership, unless the user chose one."""

from __future__ import annotations

import socket

import pytest

from stream_infer.config import load_settings
from stream_infer.tools.devloop import dev_settings


def test_dev_names_its_worker_after_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAM_INFER_PROCESSING__WORKER_ID", raising=False)
    settings = load_settings()
    assert "worker_id" not in settings.processing.model_fields_set  # a per-process default
    dev = dev_settings(settings)
    assert dev.processing.worker_id == f"dev-{socket.gethostname()}"
    # Set explicitly, as a file or variable would: what static membership keys on.
    assert "worker_id" in dev.processing.model_fields_set
    assert dev.processing.shutdown_timeout_s == settings.processing.shutdown_timeout_s


def test_a_worker_id_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_INFER_PROCESSING__WORKER_ID", "laptop-1")
    assert dev_settings(load_settings()).processing.worker_id == "laptop-1"


def test_dev_shortens_the_session_its_static_member_holds_after_it_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STREAM_INFER_PROCESSING__WORKER_ID", raising=False)
    monkeypatch.delenv("STREAM_INFER_KAFKA__CONSUMER", raising=False)
    dev = dev_settings(load_settings())
    conf = dev.kafka.consumer_config("c", dev.processing.static_id)
    assert conf["session.timeout.ms"] == 10_000
    assert conf["group.instance.id"] == f"dev-{socket.gethostname()}"
    # A session the user chose is theirs.
    monkeypatch.setenv("STREAM_INFER_KAFKA__CONSUMER", '{"session.timeout.ms": 30000}')
    dev = dev_settings(load_settings())
    assert dev.kafka.consumer_config("c")["session.timeout.ms"] == 30_000
