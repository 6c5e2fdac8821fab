"""The pseudonymization salt: an installation secret, never printed.

Looked up in order: pseudonymization.salt (PACSGUARD_SALT), salt_file, then a
per-user file created on first use (0600) so a fresh machine works without a
manual step. The same salt must be used by every installer run against one
cluster, or patient hashes stop matching across time: back the file up.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings


def default_salt_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pacsguard" / "salt"


def resolve_salt(settings: Settings) -> str:
    conf = settings.pseudonymization
    if conf.salt is not None and conf.salt.get_secret_value():
        return conf.salt.get_secret_value()
    path = conf.salt_file or default_salt_file()
    if path.exists():
        value = path.read_text().strip()
        if len(value) < 16:
            raise PacsguardError(f"salt in {path} is shorter than 16 characters")
        return value
    if conf.salt_file is not None:
        raise PacsguardError(f"pseudonymization.salt_file {path} does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip()
