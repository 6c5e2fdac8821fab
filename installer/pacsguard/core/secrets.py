"""The installation secrets of pseudonymization, never printed.

The salt of the patient-id hash: looked up in order pseudonymization.salt (PACSGUARD_SALT),
salt_file, then a per-user file created on first use (0600) so a fresh machine works without a
manual step. The same salt must be used by every installer run against one cluster, or patient
hashes stop matching across time: back the file up.

The envelope key (docs/collector.md): the key of the MAC with which the collector signs its ATNA
envelopes and the router checks them, so no other sender can pass for the collector's parser.
Looked up the same way: pseudonymization.envelope_key (PACSGUARD_ENVELOPE_KEY),
envelope_key_file, then a per-user file created on first use. The installer and every collector
of one installation need the same key (copy the file to the collector hosts).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from pydantic import SecretStr

from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings


def default_salt_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pacsguard" / "salt"


def default_envelope_key_file() -> Path:
    return default_salt_file().with_name("envelope-key")


def resolve_salt(settings: Settings) -> str:
    conf = settings.pseudonymization
    return _resolve(conf.salt, conf.salt_file, default_salt_file(), "salt", 16)


def resolve_envelope_key(settings: Settings) -> str:
    """The collector's envelope key: 64 hex characters (one SHA-256 block, see collector/atna_envelope.py)."""
    conf = settings.pseudonymization
    value = _resolve(conf.envelope_key, conf.envelope_key_file, default_envelope_key_file(), "envelope_key", 64)
    if not ENVELOPE_KEY.match(value):
        raise PacsguardError("pseudonymization.envelope_key must be 64 hexadecimal characters "
                             "(e.g. `openssl rand -hex 32`)")
    return value.lower()


ENVELOPE_KEY = re.compile(r"^[0-9a-fA-F]{64}$")


def _resolve(value: SecretStr | None, file: Path | None, default: Path, name: str, min_length: int) -> str:
    if value is not None and value.get_secret_value():
        return value.get_secret_value()
    path = file or default
    if not path.exists():
        if file is not None:
            raise PacsguardError(f"pseudonymization.{name}_file {path} does not exist")
        _create_secret(path)
    text = path.read_text().strip()
    if len(text) < min_length:
        raise PacsguardError(f"{name} in {path} is shorter than {min_length} characters")
    return text


def _create_secret(path: Path) -> None:
    """A new random secret (0600), written whole before it appears: a process that starts at the
    same time reads either nothing (and creates its own, which loses the race) or the whole value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)  # fails if another process created it first: theirs is kept
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
