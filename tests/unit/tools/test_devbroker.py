"""Cluster ids for the local broker's storage."""

from __future__ import annotations

import base64

from stream_infer.tools.devbroker import new_cluster_id


def test_cluster_ids_never_begin_with_a_dash_and_decode_to_16_bytes() -> None:
    ids = [new_cluster_id() for _ in range(20_000)]  # ~300 would begin with '-' unfiltered
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    for i in ids[:100]:
        assert len(i) == 22 and len(base64.urlsafe_b64decode(i + "==")) == 16
    # The filter has something to filter: '-' does occur as a first character of raw ids.
    assert any(i[1:2] == "-" for i in ids)
