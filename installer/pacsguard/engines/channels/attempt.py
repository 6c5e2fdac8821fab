"""One delivery attempt's outcome, the transport interface, and scrubbing secrets out of text."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal, Protocol

from pacsguard.engines.channels.message import AlertMessage

# delivered: done. transient: worth another attempt (network, 5xx, 408/429, SMTP 4xx).
# permanent: the same request will fail again until someone changes something (4xx, SMTP 5xx, TLS trust).
Verdict = Literal["delivered", "transient", "permanent"]


@dataclass(frozen=True)
class AttemptOutcome:
    verdict: Verdict
    status: str                     # short and secret-free: "HTTP 503", "SMTP 535", "connection refused"
    detail: str = ""                # why, for a person: the server's words, scrubbed
    retry_after: float | None = None  # seconds the server asked us to wait (HTTP Retry-After)


class Transport(Protocol):
    """Makes one attempt; never raises for a failed delivery, returns the outcome instead."""

    def attempt(self, message: AlertMessage, delivery_id: str, attempt: int, timeout: float) -> AttemptOutcome:
        ...


class Scrubber:
    """Removes every credential (and the encodings a protocol puts on the wire) from text we record.

    A server may echo what it received; an error message must not carry a password on to the
    alert index or a log.
    """

    def __init__(self, *secrets: str, username: str | None = None) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            forms.add(secret)
            forms.add(base64.b64encode(secret.encode()).decode())
            if username is not None:  # AUTH PLAIN's initial response
                forms.add(base64.b64encode(f"\0{username}\0{secret}".encode()).decode())
        # longest first, so a secret containing another is removed whole
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, "[redacted]")
        return text


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
