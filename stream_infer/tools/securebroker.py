"""The local broker, secured: TLS, SCRAM users and ACLs, to try a production-like cluster locally.

``stream-infer broker start --secure`` starts the same pinned Kafka as the plain
local broker, with two more listeners on 127.0.0.1:

- ``SASL_SSL`` (the clients' door): SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN over TLS;
- ``SSL`` with client certificates required (mTLS); a certificate's CN is its
  principal (``CN=stream-infer`` is ``User:stream-infer``), so one set of ACLs
  serves both doors.

The PLAINTEXT listener stays, on loopback only, as the admin's door: its
principal ``User:ANONYMOUS`` is a super user (so is ``User:admin``), and so is the
controller listener, which the broker itself uses. ``StandardAuthorizer`` with
``allow.everyone.if.no.acl.found=false`` refuses every other principal anything
it was not granted.

A throwaway CA, the server's certificate (SAN ``localhost`` and ``127.0.0.1``,
so hostname verification passes) and a client certificate are generated with
``cryptography`` on first start, in ``DATA/secure/``; passwords are random,
one file per user there (mode 0600), ready for ``kafka.secrets``. Users are
created through the admin API on every start, so ``--secure`` also works on a
data directory first formatted without it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_infer.errors import BrokerError
from stream_infer.tools.devbroker import BrokerStatus, start_broker

__all__ = [
    "ADMIN",
    "USER",
    "SecureBroker",
    "describe",
    "make_certificate",
    "make_pki",
    "secure_settings",
    "start_secure_broker",
]

ADMIN = "admin"
USER = "stream-infer"  # the worker's principal: User:stream-infer
_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
_STATE = "secure.json"
KEY_PASSWORD_FILE = "client.key.password"


@dataclass(frozen=True)
class SecureBroker:
    """Where a secured local broker listens and where its credentials are."""

    status: BrokerStatus
    sasl_port: int
    mtls_port: int
    folder: Path  # DATA/secure

    @property
    def admin_bootstrap(self) -> str:
        return self.status.bootstrap

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def mtls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.mtls_port}"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    def password_file(self, user: str) -> Path:
        return self.folder / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()


def _pem_key(key: Any, password: str | None = None) -> bytes:
    from cryptography.hazmat.primitives import serialization

    encryption: Any = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )


def make_certificate(
    folder: Path,
    name: str,
    common_name: str,
    ca: tuple[Any, Any] | None,
    days: float = 365,
    server: bool = False,
    key_password: str | None = None,
    names: tuple[str, ...] = ("localhost", "127.0.0.1"),
) -> tuple[Any, Any]:
    """A key and certificate under ``folder/name.{crt,key}``; ``ca=None`` makes a CA.

    ``days`` may be negative (an expired certificate, for tests). Server
    certificates name ``names`` (``localhost`` and ``127.0.0.1``) so that
    librdkafka's default hostname verification passes.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_cert, issuer_key = ca if ca is not None else (None, key)
    now = dt.datetime.now(dt.UTC)
    start, end = sorted((now - dt.timedelta(days=1), now + dt.timedelta(days=days)))
    if days < 0:
        start, end = now - dt.timedelta(days=2), now + dt.timedelta(days=days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
    )
    if ca is None:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        san: list[x509.GeneralName] = []
        for entry in names:
            try:
                san.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                san.append(x509.DNSName(entry))
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = folder / f"{name}.key"
    key_file.write_bytes(_pem_key(key, key_password))
    key_file.chmod(0o600)
    return cert, key


def make_pki(folder: Path) -> None:
    """CA, server certificate (and its PEM keystore for Kafka), client certificate; once."""
    from cryptography.hazmat.primitives import serialization

    if (folder / "server.pem").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca = make_certificate(folder, "ca", "stream-infer local CA", None, days=3650)
    cert, key = make_certificate(folder, "server", "localhost", ca, server=True)
    # Kafka's PEM keystore: the PKCS#8 key, then the certificate chain.
    keystore = folder / "server.pem"
    keystore.write_bytes(
        _pem_key(key)
        + cert.public_bytes(serialization.Encoding.PEM)
        + ca[0].public_bytes(serialization.Encoding.PEM)
    )
    keystore.chmod(0o600)
    # The client's key is encrypted, as a real one should be: ssl.key.password opens it.
    key_password = secrets.token_urlsafe(18)
    _write_secret(folder / KEY_PASSWORD_FILE, key_password)
    make_certificate(folder, "client", USER, ca, key_password=key_password)


def _write_secret(path: Path, value: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(value + "\n")


def _broker_properties(folder: Path) -> dict[str, str]:
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    props = {
        "sasl.enabled.mechanisms": ",".join((*_MECHANISMS, "PLAIN")),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(folder / "server.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(folder / "ca.crt"),
        "listener.name.ssl.ssl.client.auth": "required",
        # The mTLS door names principals by their certificate's CN, like SCRAM users.
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        # ANONYMOUS: the loopback PLAINTEXT (admin) and controller listeners.
        "super.users": f"User:{ADMIN};User:ANONYMOUS",
    }
    for mechanism in _MECHANISMS:
        props[f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config"] = scram
    # PLAIN checks passwords against the broker's own JAAS entry (no SCRAM store).
    users = " ".join(
        f'user_{user}="{(folder / f"{user}.password").read_text().strip()}"'
        for user in (ADMIN, USER)
    )
    props["listener.name.sasl_ssl.plain.sasl.jaas.config"] = (
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
    )
    return props


def _create_users(admin_bootstrap: str, folder: Path) -> None:
    """SCRAM credentials for every user and mechanism (upserted: idempotent on restart)."""
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient({"bootstrap.servers": admin_bootstrap})
    # One request per mechanism: Kafka refuses two changes to one user in a request.
    for mechanism in _MECHANISMS:
        info = ScramCredentialInfo(getattr(ScramMechanism, mechanism.replace("-", "_")), 8192)
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(
                user, info, (folder / f"{user}.password").read_text().strip().encode()
            )
            for user in (ADMIN, USER)
        ]
        for user, future in admin.alter_user_scram_credentials(upserts).items():
            try:
                future.result(timeout=30)
            except Exception as exc:
                raise BrokerError(f"creating the SCRAM user {user} failed: {exc}") from None


def start_secure_broker(
    port: int, sasl_port: int, mtls_port: int, data_dir: str | Path, timeout: float = 120.0
) -> SecureBroker:
    """Start (or find running) the secured broker of ``data_dir`` and create its users."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise BrokerError(
            "the secured local broker generates its certificates with the 'cryptography' "
            "package: pip install 'stream-infer[broker]'"
        ) from None
    data = Path(data_dir).resolve()
    folder = data / "secure"
    state_file = folder / _STATE
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        if (state["sasl_port"], state["mtls_port"]) != (sasl_port, mtls_port):
            ports = f"--secure-port {state['sasl_port']} --mtls-port {state['mtls_port']}"
            raise BrokerError(f"the secured broker of {data} uses other ports ({ports})")
    make_pki(folder)
    for user in (ADMIN, USER):
        if not (folder / f"{user}.password").is_file():
            _write_secret(folder / f"{user}.password", secrets.token_urlsafe(18))
    listeners = {"SASL_SSL": ("SASL_SSL", sasl_port), "SSL": ("SSL", mtls_port)}
    status = start_broker(
        port, data, timeout, extra=_broker_properties(folder), listeners=listeners
    )
    state_file.write_text(json.dumps({"sasl_port": sasl_port, "mtls_port": mtls_port}))
    _create_users(status.bootstrap, folder)
    return SecureBroker(status, sasl_port, mtls_port, folder)


def secure_settings(broker: SecureBroker, user: str = USER, mtls: bool = False) -> dict[str, Any]:
    """The ``kafka`` section a client of this broker needs, password and key from files."""
    folder = broker.folder
    if mtls:
        return {
            "bootstrap_servers": broker.mtls_bootstrap,
            "common": {
                "security.protocol": "SSL",
                "ssl.ca.location": str(folder / "ca.crt"),
                "ssl.certificate.location": str(folder / "client.crt"),
                "ssl.key.location": str(folder / "client.key"),
            },
            "secrets": {"ssl.key.password": str(folder / KEY_PASSWORD_FILE)},
        }
    return {
        "bootstrap_servers": broker.bootstrap,
        "common": {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "ssl.ca.location": str(folder / "ca.crt"),
        },
        "secrets": {"sasl.password": str(broker.password_file(user))},
    }


def describe(broker: SecureBroker) -> str:
    """What ``broker start --secure`` prints: where to connect, and the settings to use."""
    import yaml

    kafka = secure_settings(broker)
    mtls = secure_settings(broker, mtls=True)
    folder = broker.folder
    return "\n".join(
        [
            f"secured broker running: pid {broker.status.pid}, data {broker.status.data_dir}",
            f"  SASL_SSL (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN): {broker.bootstrap}",
            f"  SSL with client certificates (mTLS):            {broker.mtls_bootstrap}",
            f"  PLAINTEXT, admin (super user), loopback only:   {broker.admin_bootstrap}",
            f"  CA certificate: {broker.ca_file}",
            f"  users: {USER} (ACLs only), {ADMIN} (super user); passwords in "
            f"{folder}/<user>.password",
            "",
            "# worker settings (SCRAM over TLS; the password is read from the file):",
            yaml.safe_dump({"kafka": kafka}, sort_keys=False).rstrip(),
            "# or mTLS: the client certificate's CN is the principal, User:stream-infer",
            "#   "
            + yaml.safe_dump({"kafka": mtls}, sort_keys=False).rstrip().replace("\n", "\n#   "),
            "",
            f"# User:{USER} may do nothing yet; grant what a worker of that config needs:",
            f"#   stream-infer acls --config worker.yaml --principal User:{USER} "
            f"--apply {broker.admin_bootstrap}",
        ]
    )
