"""Secured deployments: the ConfigMap's commented example works, the KafkaUser grants the table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from stream_infer.config import Settings, load_settings
from stream_infer.tools.acls import worker_acls
from tests.deploy.common import KUBERNETES

SECRET_DIR = "/etc/stream-infer/kafka"


def _config_text() -> str:
    configmap = yaml.safe_load((KUBERNETES / "base" / "configmap.yaml").read_text())
    return str(configmap["data"]["config.yaml"])


def test_the_commented_secure_example_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncommented as the comment says, with the Secret's files in a folder of our own."""
    text = _config_text()
    example = re.findall(r"^(\s*)#   (.*)$", text, flags=re.M)
    assert example, "the ConfigMap lost its secured example"
    indent = example[0][0]
    block = "".join(f"{indent}{line}\n" for _, line in example)
    secured = text.replace(f"{indent}common: {{}}\n", block).replace(SECRET_DIR, str(tmp_path))
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "sasl.password").write_text("from-the-secret\n")
    config = tmp_path / "config.yaml"
    config.write_text(secured)
    monkeypatch.delenv("STREAM_INFER_KAFKA__COMMON", raising=False)
    settings = load_settings(config)
    base = settings.kafka.base()
    assert base["security.protocol"] == "SASL_SSL"
    assert base["sasl.password"] == "from-the-secret"
    assert base["ssl.ca.location"] == str(tmp_path / "ca.crt")
    (tmp_path / "sasl.password").unlink()  # the Secret not mounted: one line, key and path
    with pytest.raises(Exception, match=r"cannot read sasl\.password from .*: no such file"):
        load_settings(config)


_OPERATIONS = {"Read": "READ", "Write": "WRITE", "Describe": "DESCRIBE"}
_KINDS = {"topic": "topic", "group": "group", "transactionalId": "transactional-id"}


def test_the_strimzi_user_grants_exactly_the_acl_table() -> None:
    user = yaml.safe_load((KUBERNETES / "strimzi" / "kafkauser.yaml").read_text())
    assert user["apiVersion"] == "kafka.strimzi.io/v1beta2" and user["kind"] == "KafkaUser"
    assert user["metadata"]["labels"]["strimzi.io/cluster"]
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    authorization = user["spec"]["authorization"]
    assert authorization["type"] == "simple"
    granted = set()
    for acl in authorization["acls"]:
        assert set(acl) == {"resource", "operations"}
        resource = acl["resource"]
        assert set(resource) == {"type", "name", "patternType"}
        assert resource["patternType"] in ("literal", "prefix")
        granted.add(
            (
                _KINDS[resource["type"]],
                resource["name"],
                tuple(_OPERATIONS[op] for op in acl["operations"]),
                resource["patternType"] == "prefix",
            )
        )
    settings = Settings(**yaml.safe_load(_config_text()))
    table = {
        (g.kind, g.name, g.operations, g.prefixed) for g in worker_acls(settings, "exactly_once")
    }
    assert granted == table
