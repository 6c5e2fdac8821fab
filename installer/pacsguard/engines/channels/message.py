"""What the engine hands to delivery: one alert rendered for people and for machines."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# Delivery ids travel in an HTTP header and inside an e-mail Message-ID, so they keep to
# characters both accept unquoted (RFC 5322 dot-atom text without the rarer symbols).
DELIVERY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_delivery_id(delivery_id: str) -> str:
    if not DELIVERY_ID.match(delivery_id):
        raise ValueError(f"delivery_id {delivery_id!r}: use 1-200 characters of A-Z a-z 0-9 . _ - "
                         "(it becomes a header value and part of an e-mail Message-ID)")
    return delivery_id


@dataclass(frozen=True)
class AlertMessage:
    """subject and text are what a person reads (e-mail, Slack); alert is the JSON-able alert a
    machine reads (webhook body). A non-JSON-able alert is the caller's bug and fails here, early."""

    subject: str
    text: str
    alert: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            json.dumps(self.alert, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"AlertMessage.alert must be JSON-able: {exc}") from exc

    def one_line_subject(self) -> str:
        """Headers cannot hold line breaks (and must not: header injection)."""
        return " ".join(self.subject.split())
