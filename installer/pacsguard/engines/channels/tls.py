"""The client TLS context every transport uses: verified by default, with an optional private CA."""

from __future__ import annotations

import ssl
from pathlib import Path

from pacsguard.core.errors import PacsguardError


def client_context(ca_bundle: Path | None, verify_tls: bool, what: str) -> ssl.SSLContext:
    if ca_bundle is not None and not ca_bundle.is_file():
        raise PacsguardError(f"{what}: ca_bundle {ca_bundle} does not exist")
    try:
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except (OSError, ssl.SSLError) as exc:
        raise PacsguardError(f"{what}: cannot load ca_bundle {ca_bundle}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify_tls:  # throwaway test receivers only; settings say so explicitly
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
