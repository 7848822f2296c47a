"""Secrets in the configuration: sealed as SecretStr, read from files, checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from stream_infer.config import Settings, load_settings
from stream_infer.errors import ConfigError
from stream_infer.secrets import is_secret_key

SCRAM = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "svc",
}


@pytest.mark.parametrize(
    "key",
    [
        "sasl.password",
        "sasl.oauthbearer.client.secret",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.key.pem",
        "ssl_key",
        "sasl.oauthbearer.config",
        "some.future.Secret.key",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["sasl.username", "ssl.ca.location", "security.protocol"])
def test_plain_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_a_password_in_common_is_sealed_and_revealed_only_for_clients() -> None:
    s = Settings(kafka={"common": {**SCRAM, "sasl.password": "hunter2"}})
    assert isinstance(s.kafka.common["sasl.password"], SecretStr)
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump(mode="json"))
    assert s.kafka.base()["sasl.password"] == "hunter2"
    assert s.kafka.consumer_config("c")["sasl.password"] == "hunter2"
    assert s.kafka.producer_config("p")["sasl.password"] == "hunter2"


def test_client_specific_secrets_are_sealed_too() -> None:
    s = Settings(kafka={"producer": {"ssl.key.password": "k3y"}})
    assert isinstance(s.kafka.producer["ssl.key.password"], SecretStr)
    assert s.kafka.producer_config("p")["ssl.key.password"] == "k3y"
    assert s.kafka.producer_props() == {"ssl.key.password": "k3y"}


def test_secret_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    s = Settings(kafka={"common": SCRAM, "secrets": {"sasl.password": str(tmp_path / "pw")}})
    assert s.kafka.base()["sasl.password"] == "from-file"  # the newline is not part of it
    assert "from-file" not in repr(s)


def test_secrets_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("env-file")
    monkeypatch.setenv("STREAM_INFER_KAFKA__SECRETS", f'{{"sasl.password": "{tmp_path / "pw"}"}}')
    monkeypatch.setenv("STREAM_INFER_KAFKA__COMMON", '{"security.protocol": "SASL_SSL", '
                       '"sasl.mechanism": "PLAIN", "sasl.username": "u"}')  # fmt: skip
    assert load_settings().kafka.base()["sasl.password"] == "env-file"


@pytest.mark.parametrize(
    ("content", "why"),
    [(None, "no such file"), ("", "the file is empty"), ("\n", "the file is empty")],
)
def test_a_bad_secret_file_names_key_and_path(
    tmp_path: Path, content: str | None, why: str
) -> None:
    path = tmp_path / "pw"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_settings(_config(tmp_path, f"  secrets: {{sasl.password: {path}}}\n"))
    assert f"cannot read sasl.password from {path}: {why}" in str(err.value)


def test_an_unreadable_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "dir"
    path.mkdir()
    with pytest.raises(ConfigError, match="it is a directory"):
        load_settings(_config(tmp_path, f"  secrets: {{sasl.password: {path}}}\n"))


def _config(tmp_path: Path, extra: str, common: dict[str, str] = SCRAM) -> Path:
    lines = "".join(f"    {k}: {v}\n" for k, v in common.items())
    path = tmp_path / "c.yaml"
    path.write_text(f"kafka:\n  common:\n{lines}{extra}")
    return path


def test_a_secret_in_both_places_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    with pytest.raises(ConfigError, match=r"sasl\.password set in both"):
        load_settings(
            _config(
                tmp_path,
                f"  secrets: {{sasl.password: {tmp_path / 'pw'}}}\n",
                {**SCRAM, "sasl.password": "y"},
            )
        )


@pytest.mark.parametrize(
    ("common", "message"),
    [
        (SCRAM, "sasl.mechanism SCRAM-SHA-512 needs sasl.password"),
        ({**SCRAM, "sasl.username": '""'}, "needs sasl.username and sasl.password"),
        ({**SCRAM, "sasl.username": ""}, "sasl.username: must be a string, a number or a boolean$"),
        (
            {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
             "sasl.oauthbearer.method": "oidc", "sasl.oauthbearer.client.id": "c"},
            "oidc needs sasl.oauthbearer.token.endpoint.url, sasl.oauthbearer.client.secret",
        ),
        ({"ssl.ca.location": "/nowhere/ca.pem"}, "ssl.ca.location: no such file: /nowhere/ca.pem"),
    ],
)  # fmt: skip
def test_security_settings_that_cannot_work(
    tmp_path: Path, common: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_settings(_config(tmp_path, "", common))


def test_oidc_with_every_setting_passes() -> None:
    s = Settings(
        kafka={
            "common": {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "OAUTHBEARER",
                "sasl.oauthbearer.method": "oidc",
                "sasl.oauthbearer.client.id": "worker",
                "sasl.oauthbearer.client.secret": "s3cr3t",
                "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token",
            }
        }
    )
    assert isinstance(s.kafka.common["sasl.oauthbearer.client.secret"], SecretStr)


def test_a_wrong_type_for_a_secret_does_not_echo_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  common:\n    sasl.password: [hunter2]\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "kafka.common.sasl.password" in str(err.value) and "hunter2" not in str(err.value)
