"""Certificate failures are said at once, with OpenSSL's reason and the CA file.

The TLS handshake comes before any Kafka request, so a plain TLS server on
loopback that presents the certificate under test is all the peer librdkafka
meets here; the untrusted-CA case against the real secured broker lives in
tests/integration/secure.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stream_infer.errors import KafkaClientError
from stream_infer.kafka.admin import probe_cluster
from stream_infer.tools.securebroker import make_certificate


@contextmanager
def _tls_server(folder: Path, name: str) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / f"{name}.crt", folder / f"{name}.key")
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed: the test is over
            try:
                context.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()  # the client gave up on our certificate, as it should

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


@pytest.mark.parametrize(
    ("days", "names", "reason"),
    [
        (-1, ("localhost", "127.0.0.1"), "certificate has expired"),
        (30, ("kafka.example",), "IP address mismatch"),
    ],
    ids=["expired", "wrong-name"],
)
def test_certificate_failures_name_the_reason_and_the_ca(
    tmp_path: Path, days: int, names: tuple[str, ...], reason: str
) -> None:
    ca = make_certificate(tmp_path, "ca", "test CA", None)
    make_certificate(tmp_path, "server", "kafka", ca, days=days, server=True, names=names)
    with _tls_server(tmp_path, "server") as port:
        conf = {
            "bootstrap.servers": f"127.0.0.1:{port}",
            "security.protocol": "SSL",
            "ssl.ca.location": str(tmp_path / "ca.crt"),
        }
        started = time.monotonic()
        with pytest.raises(KafkaClientError) as err:
            probe_cluster(conf, 30)
        took = time.monotonic() - started
    line = str(err.value)
    assert line.startswith(f"TLS handshake with 127.0.0.1:{port} failed: certificate verify failed")
    assert reason in line
    assert line.endswith(f"CA file: {tmp_path / 'ca.crt'}")
    assert took < 10, f"{took:.1f}s: the failure waited like an unreachable broker"
