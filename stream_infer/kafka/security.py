"""Secured clusters: checking the security settings, and failures an operator can act on.

librdkafka reports a wrong password, an untrusted certificate or a missing ACL
in its own words, often only as "Broker transport failure" after a minute of
reconnects. The worker turns each into one line that names the cause, the
principal it connected as and the resource, so the fix (a password, a CA file,
an ACL) is obvious from the log alone.

Nothing here ever prints a secret: lines are built from the principal's name,
the mechanism and file paths only.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError

from stream_infer.errors import kafka_error_text

__all__ = [
    "AUTHORIZATION",
    "authentication_failure",
    "check_security",
    "denied",
    "principal",
    "verify_reason",
]

# librdkafka properties that name a file it reads at client creation.
_FILE_KEYS = (
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.crl.location",
)
_USER_PASSWORD = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

AUTHORIZATION = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}
_AUTHENTICATION = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}


def _get(conf: dict[str, Any], key: str, default: str = "") -> str:
    value = conf.get(key, default)
    return str(value) if value is not None else default


def _protocol(conf: dict[str, Any]) -> str:
    return _get(conf, "security.protocol", "plaintext").lower()


def _mechanism(conf: dict[str, Any]) -> str:
    return (_get(conf, "sasl.mechanism") or _get(conf, "sasl.mechanisms") or "GSSAPI").upper()


def check_security(conf: dict[str, Any]) -> None:
    """Refuse, before any connection, settings that cannot work; ValueError names the keys.

    librdkafka would refuse some of them too, but only when the client is
    created (after the model is loaded) and without saying where to look.
    """
    for key in _FILE_KEYS:
        location = _get(conf, key)
        if not location or (key == "ssl.ca.location" and location == "probe"):
            continue
        path = Path(location)
        if not path.exists():
            raise ValueError(f"{key}: no such file: {location}")
        if path.is_file():
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"{key}: cannot read {location}: {exc.strerror}") from None
    if not _protocol(conf).startswith("sasl"):
        return
    mechanism = _mechanism(conf)
    if mechanism in _USER_PASSWORD:
        missing = [k for k in ("sasl.username", "sasl.password") if not conf.get(k)]
        if missing:
            raise ValueError(
                f"sasl.mechanism {mechanism} needs {' and '.join(missing)} "
                "(in kafka.common, or kafka.secrets for the password)"
            )
    elif mechanism == "OAUTHBEARER" and _get(conf, "sasl.oauthbearer.method").lower() == "oidc":
        needed = ["sasl.oauthbearer.client.id", "sasl.oauthbearer.token.endpoint.url"]
        grant = _get(conf, "sasl.oauthbearer.grant.type", "client_credentials")
        if grant == "client_credentials":
            needed.append("sasl.oauthbearer.client.secret")
        missing = [k for k in needed if not conf.get(k)]
        if missing:
            raise ValueError(f"sasl.oauthbearer.method oidc needs {', '.join(missing)}")


def principal(conf: dict[str, Any]) -> str:
    """Who the broker sees, as far as the client can tell (for error lines, never a secret)."""
    protocol = _protocol(conf)
    if protocol.startswith("sasl"):
        mechanism = _mechanism(conf)
        if mechanism in _USER_PASSWORD:
            return f"User:{_get(conf, 'sasl.username', '?')} ({mechanism})"
        if mechanism == "OAUTHBEARER":
            client = _get(conf, "sasl.oauthbearer.client.id")
            return (
                f"the OAUTHBEARER token's principal (client id '{client}')"
                if client
                else ("the OAUTHBEARER token's principal")
            )
        return f"the {mechanism} principal"
    if protocol == "ssl":
        cert = _get(conf, "ssl.certificate.location") or _get(conf, "ssl.keystore.location")
        return f"the certificate {cert}" if cert else "User:ANONYMOUS (no client certificate)"
    return "User:ANONYMOUS"


def verify_reason(conf: dict[str, Any], timeout: float = 3.0) -> str | None:
    """Why the first bootstrap server's certificate fails verification, in OpenSSL's words.

    librdkafka says only "certificate verify failed"; one handshake of our own
    (the same CA file and hostname check, stdlib ``ssl``) tells an expired
    certificate from a wrong name or an unknown issuer. None when it cannot tell.
    """
    first = _get(conf, "bootstrap.servers").split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        context = ssl.create_default_context(cafile=_get(conf, "ssl.ca.location") or None)
        if _get(conf, "ssl.endpoint.identification.algorithm", "https").lower() == "none":
            context.check_hostname = False
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host.strip("[]")),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message)
    except (OSError, ValueError):
        return None


def authentication_failure(
    err: KafkaError, conf: dict[str, Any], probe_tls: bool = False
) -> str | None:
    """One line for a failed login or TLS handshake, or None when ``err`` is neither.

    Both are permanent until someone changes a password, a certificate or a CA
    file: retrying for a minute as if the broker were away only hides them.
    ``probe_tls`` asks the server once more with Python's TLS for the exact reason.
    """
    text = kafka_error_text(err)
    servers = _get(conf, "bootstrap.servers", "?")
    if err.code() in _AUTHENTICATION:
        reason = text.split(": ", 1)[-1] if "/bootstrap: " in text else text
        return (
            f"SASL authentication failed for {principal(conf)} at {servers}: "
            f"{reason.split('(after', 1)[0].strip()} (check sasl.username and sasl.password)"
        )
    if err.code() == KafkaError._SSL and "certificate verify failed" in text:
        detail = verify_reason(conf) if probe_tls else None
        if detail is None:
            detail = text.split("certificate verify failed", 1)[1].split("(after", 1)[0]
            detail = detail.strip(" :")
        ca = _get(conf, "ssl.ca.location") or "the system's CA store (ssl.ca.location not set)"
        return (
            f"TLS handshake with {servers} failed: certificate verify failed"
            f"{' (' + detail + ')' if detail else ''}; CA file: {ca}"
        )
    return None


def denied(code: str, conf: dict[str, Any], what: str, resource: str, grant: str) -> str:
    """One line for an authorization failure: who, what it tried, on which resource, the fix.

    ``code`` is the Kafka error's name (``TOPIC_AUTHORIZATION_FAILED``), or what
    the start-up check found missing.
    """
    return (
        f"not authorized: {principal(conf)} may not {what} {resource} "
        f"[{code}]; grant {grant} (see the README's ACL table)"
    )
