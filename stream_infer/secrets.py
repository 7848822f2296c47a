"""Which client properties are secrets, where they come from, and where they are revealed.

A credential lives in the settings as a :class:`pydantic.SecretStr` from the moment
it is read (from the YAML file, an environment override or a file named in
``kafka.secrets``), so a log line, an error message, a ``repr`` or a settings
dump shows ``**********``. :func:`reveal` is called only where the librdkafka
dictionary is built.

Secrets from files are the Kubernetes way: a Secret mounted as a volume, one
file per key. The file's content is the value, a trailing newline excepted
(``echo pw > file`` writes one); an empty, missing or unreadable file is a
start-up error that names the key and the path, never the content.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

__all__ = [
    "SECRET_WORDS",
    "is_secret_key",
    "read_secret_file",
    "reveal",
    "seal",
]

# Any property whose name holds one of these is a secret, whatever librdkafka adds later.
SECRET_WORDS = ("password", "secret")
# Secrets whose names do not say so: private keys given inline, and the OAUTHBEARER
# config string (it may carry a client secret for some providers).
_SECRET_KEYS = {"ssl.key.pem", "ssl_key", "ssl.keystore.pem", "sasl.oauthbearer.config"}
# A file holding one value, not a certificate bundle: anything larger is a wrong path.
_MAX_SECRET_BYTES = 64 * 1024


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in _SECRET_KEYS or any(word in lowered for word in SECRET_WORDS)


def seal(props: Mapping[str, Any]) -> dict[str, Any]:
    """The same properties with every secret value wrapped in a SecretStr."""
    return {
        key: SecretStr(str(value))
        if is_secret_key(key) and not isinstance(value, SecretStr)
        else value
        for key, value in props.items()
    }


def reveal(props: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values for librdkafka: call it only where a client configuration is built."""
    return {
        key: value.get_secret_value() if isinstance(value, SecretStr) else value
        for key, value in props.items()
    }


def read_secret_file(key: str, path: str) -> SecretStr:
    """The value of ``key`` from the file at ``path``; ValueError names both, never the content."""
    where = f"{key} from {path}"
    file = Path(path)
    try:
        if file.is_dir():
            raise ValueError(f"cannot read {where}: it is a directory")
        size = file.stat().st_size
        if size > _MAX_SECRET_BYTES:
            raise ValueError(f"cannot read {where}: {size} bytes is too large for one value")
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"cannot read {where}: no such file") from None
    except PermissionError:
        raise ValueError(f"cannot read {where}: permission denied") from None
    except UnicodeDecodeError:
        raise ValueError(f"cannot read {where}: not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"cannot read {where}: {exc.strerror}") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise ValueError(f"cannot read {where}: the file is empty")
    return SecretStr(value)
