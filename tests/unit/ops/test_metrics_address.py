"""metrics.address binds the endpoints to one interface: elsewhere, nothing answers.

127.0.0.2 is another address of the loopback interface on Linux: a server bound
to 127.0.0.1 alone does not answer there, one bound to 0.0.0.0 does (the control,
so that the first check can fail).
"""

from __future__ import annotations

import socket
import sys
import urllib.request

import pytest

from stream_infer.config import Settings
from stream_infer.ops.telemetry import Telemetry

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="127.0.0.2 is a loopback address on Linux only"
)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.parametrize(("address", "elsewhere"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_metrics_answer_only_where_bound(address: str, elsewhere: bool) -> None:
    telemetry = Telemetry(Settings(metrics={"address": address, "port": 0}))
    telemetry.serve()
    try:
        assert telemetry.server is not None
        port = telemetry.port
        assert port is not None
        bound = telemetry.server._server.server_address  # what the socket really bound
        assert bound[0] == address
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"stream_infer_" in body
        assert _answers("127.0.0.2", port) is elsewhere
    finally:
        telemetry.close(0.1)
