"""The webhook wire format: body bytes, headers, and the HMAC-SHA256 signature (docs/alerting.md).

The signature covers the exact body bytes. The body carries the delivery id and the send time,
so both are signed too: a receiver that checks the signature, drops ids it has seen and refuses
old timestamps is safe from forged, duplicated and replayed alerts. The headers repeat id and
time so a receiver can route or drop a duplicate before parsing JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from pacsguard.engines.channels.message import AlertMessage

SIGNATURE_HEADER = "X-Pacsguard-Signature"
TIMESTAMP_HEADER = "X-Pacsguard-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Headers the pack sets itself; a channel's extra headers may not replace them.
RESERVED_HEADERS = frozenset(h.lower() for h in (
    SIGNATURE_HEADER, TIMESTAMP_HEADER, IDEMPOTENCY_HEADER, "Content-Type", "Content-Length", "Host",
    "User-Agent", "Transfer-Encoding", "Connection"))


def webhook_body(message: AlertMessage, *, delivery_id: str, channel: str, attempt: int, timestamp: int) -> bytes:
    """Compact, key-sorted, ASCII-only JSON: the same inputs always give the same bytes."""
    document: dict[str, Any] = {
        "subject": message.subject,
        "text": message.text,
        "alert": message.alert,
        "delivery": {"id": delivery_id, "channel": channel, "attempt": attempt, "timestamp": timestamp},
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def sign(secret: bytes, body: bytes) -> str:
    """The X-Pacsguard-Signature value: sha256=<lower-case hex HMAC-SHA256 of the body bytes>."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, signature_header: str) -> bool:
    """For receivers written in Python: constant-time comparison against the expected value."""
    return hmac.compare_digest(sign(secret, body).encode(), signature_header.strip().encode())


def slack_body(message: AlertMessage) -> bytes:
    """Slack incoming-webhook payload. Alert text contains values from audit events (user names,
    hosts): &, < and > are escaped as Slack asks, so an event cannot smuggle in a mention such as
    <!channel> or a disguised link."""
    text = f"*{_slack_escape(message.one_line_subject())}*\n{_slack_escape(message.text)}"
    return json.dumps({"text": text}, ensure_ascii=True).encode("ascii")


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
