"""The local broker's storage formatting, with Kafka's own StorageTool (java + the cached jars)."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from stream_infer.tools.devbroker import _properties, fetch_jars, format_storage, free_port


def test_a_cluster_id_that_begins_with_a_dash_still_formats(tmp_path: Path) -> None:
    fetch_jars()
    raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    dashed = "-" + raw[1:]  # still 16 bytes of base64, as Kafka checks
    props = tmp_path / "server.properties"
    props.write_text(_properties(tmp_path, free_port(), free_port()))
    format_storage(props, dashed)
    meta = (tmp_path / "kraft" / "meta.properties").read_text()
    assert f"cluster.id={dashed}" in meta
