"""The lines a secured cluster's failures turn into: principal, cause, resource, no secret."""

from __future__ import annotations

from confluent_kafka import KafkaError

from stream_infer.config import Settings
from stream_infer.kafka.security import authentication_failure, denied, principal
from stream_infer.tools.acls import kafka_acls_commands, worker_acls

SCRAM = {
    "bootstrap.servers": "kafka:9093",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "svc",
    "sasl.password": "hunter2",
    "ssl.ca.location": "/etc/ca.crt",
}


def test_principal_names_the_user_never_the_password() -> None:
    assert principal(SCRAM) == "User:svc (SCRAM-SHA-512)"
    assert principal({"security.protocol": "SSL", "ssl.certificate.location": "/c.crt"}) == (
        "the certificate /c.crt"
    )
    oidc = {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
            "sasl.oauthbearer.client.id": "w"}  # fmt: skip
    assert principal(oidc) == "the OAUTHBEARER token's principal (client id 'w')"
    assert principal({}) == "User:ANONYMOUS"


def test_authentication_failure_line() -> None:
    err = KafkaError(
        KafkaError._AUTHENTICATION,
        "sasl_ssl://kafka:9093/bootstrap: SASL authentication error: Authentication failed "
        "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 "
        "(after 312ms in state AUTH_REQ)",
    )
    line = authentication_failure(err, SCRAM)
    assert line is not None
    assert line.startswith("SASL authentication failed for User:svc (SCRAM-SHA-512) at kafka:9093")
    assert "invalid credentials" in line and "hunter2" not in line and "after 312ms" not in line


def test_certificate_failure_line_names_the_ca_file() -> None:
    err = KafkaError(
        KafkaError._SSL,
        "sasl_ssl://kafka:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
        "certificate verify failed: broker certificate could not be verified (after 8ms in "
        "state SSL_HANDSHAKE)",
    )
    line = authentication_failure(err, SCRAM)
    assert line is not None
    assert line.startswith("TLS handshake with kafka:9093 failed: certificate verify failed")
    assert line.endswith("CA file: /etc/ca.crt")


def test_other_errors_are_not_authentication_failures() -> None:
    err = KafkaError(KafkaError._TRANSPORT, "Connection refused")
    assert authentication_failure(err, SCRAM) is None


def test_denied_line() -> None:
    line = denied("TOPIC_AUTHORIZATION_FAILED", SCRAM, "write to", "topic 'p'", "WRITE on it")
    assert line == (
        "not authorized: User:svc (SCRAM-SHA-512) may not write to topic 'p' "
        "[TOPIC_AUTHORIZATION_FAILED]; grant WRITE on it (see the README's ACL table)"
    )


def test_acl_table_per_guarantee() -> None:
    s = Settings(kafka={"group_id": "g"}, topics={"inputs": ["a", "b"], "output": "o"})
    at_least_once = {(g.kind, g.name, g.operations, g.prefixed) for g in worker_acls(s)}
    assert at_least_once == {
        ("topic", "a", ("READ", "DESCRIBE"), False),
        ("topic", "b", ("READ", "DESCRIBE"), False),
        ("topic", "o", ("WRITE", "DESCRIBE"), False),
        ("topic", "events.dlq", ("WRITE", "DESCRIBE"), False),
        ("group", "g", ("READ",), False),
    }
    exactly_once = {(g.kind, g.name, g.prefixed) for g in worker_acls(s, "exactly_once")}
    assert exactly_once - {(k, n, p) for k, n, _, p in at_least_once} == {
        ("transactional-id", "stream-infer-g-", True)
    }
    lines = kafka_acls_commands(worker_acls(s, "exactly_once"), "User:w")
    assert lines[-1].endswith(
        "--allow-principal User:w --operation WRITE --operation DESCRIBE "
        "--transactional-id stream-infer-g- --resource-pattern-type prefixed"
    )
