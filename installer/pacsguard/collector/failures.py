"""Originals of failed events, sealed: no raw patient identifier in any index, yet nothing lost.

An event the pipeline cannot take still holds whatever the sender put in it:
patient ids and names in clear (a FHIR AuditEvent without ``recorded``, ATNA
behind an RFC 3164 header, a desynchronised stream ...). The router's failure
path therefore keeps no original text, only its SHA-256 and size; the
collector, which sees in the bulk answer which events went to the failure
index, adds to each a companion document ``<event id>:original`` whose
``event.sealed`` is the original encrypted with AES-256-GCM under the
installation's failures key (associated data: the event id, so a sealed
original cannot be moved to another event).

The failures key is separate from the pseudonymization salt: the salt lets its
holder test guesses of patient ids against the hashes, the key lets its
holder read originals; different people need them (pipelines vs. the
failure-reviewer). It comes from PACSGUARD_FAILURES_KEY (base64 of 32 bytes),
PACSGUARD_FAILURES_KEY_FILE, or ~/.config/pacsguard/failures.key, created
(mode 0600) on first use by the collector.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pacsguard.core.errors import PacsguardError

SEALED_SUFFIX = ":original"
SCHEME = "aes-256-gcm"


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pacsguard" / "failures.key"


def resolve_failures_key(create: bool = False, environ: dict[str, str] | None = None) -> bytes:
    """The 32-byte failures key from the environment or its file; with ``create``, make the file if missing."""
    env = os.environ if environ is None else environ
    text = env.get("PACSGUARD_FAILURES_KEY")
    if text:
        return _decode_key(text.strip(), "PACSGUARD_FAILURES_KEY")
    path = Path(env["PACSGUARD_FAILURES_KEY_FILE"]) if env.get("PACSGUARD_FAILURES_KEY_FILE") else default_key_file()
    if path.is_file():
        return _decode_key(path.read_text().strip(), str(path))
    if not create:
        raise PacsguardError(f"no failures key: set PACSGUARD_FAILURES_KEY or PACSGUARD_FAILURES_KEY_FILE "
                             f"(default {path} does not exist)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    return _decode_key(path.read_text().strip(), str(path))


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PacsguardError(f"failures key in {where} is not base64") from None
    if len(key) != 32:
        raise PacsguardError(f"failures key in {where} must be 32 bytes (base64 of 32 random bytes), got {len(key)}")
    return key


def key_id(key: bytes) -> str:
    """Names the key a sealed original needs, without revealing it."""
    return hashlib.sha256(b"pacsguard-failures-key:" + key).hexdigest()[:12]


def fingerprint(text: str) -> dict[str, Any]:
    """The same fingerprint the router's failure path stores (SHA-256 of UTF-8, length in UTF-16 units as Java counts)."""
    data = text.encode("utf-8", "surrogatepass")
    return {"original_sha256": hashlib.sha256(data).hexdigest(),
            "original_length": len(text.encode("utf-16-le", "surrogatepass")) // 2}


class FailureProtector:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = key_id(key)

    def seal(self, event_id: str, text: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, text.encode("utf-8", "surrogatepass"), event_id.encode())
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, event_id: str, sealed: str) -> str:
        try:
            data = base64.b64decode(sealed, validate=True)
            return self._aead.decrypt(data[:12], data[12:], event_id.encode()).decode("utf-8", "surrogatepass")
        except (InvalidTag, ValueError, binascii.Error):
            raise PacsguardError(f"the sealed original of {event_id} does not open with this key "
                                 f"(key id {self.key_id}): wrong key, or the document was altered") from None

    def companion(self, event_id: str, text: str, now: str) -> dict[str, Any]:
        """The document stored next to a failure: the original, sealed."""
        return {"@timestamp": now,
                "event": {"id": event_id, "dataset": "pacs.audit", "ingested": now, "sealed": self.seal(event_id, text),
                          **fingerprint(text)},
                "pacsguard": {"original_of": event_id, "key_id": self.key_id, "scheme": SCHEME}}

    def protect(self, event_id: str, text: str) -> dict[str, Any]:
        """Fields for a failure document the collector writes itself (a bulk item refused for good)."""
        return {"event": {"sealed": self.seal(event_id, text), **fingerprint(text)},
                "pacsguard": {"key_id": self.key_id, "scheme": SCHEME}}
