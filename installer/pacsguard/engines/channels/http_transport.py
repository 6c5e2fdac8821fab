"""Webhook and Slack delivery over HTTP(S): one POST per attempt, classified for retry.

urllib rather than a client library: it is enough, honours the usual proxy variables
(https_proxy, no_proxy) that hospital networks rely on, and lets us refuse redirects
(a redirected POST would be re-sent, or turned into a GET that loses the alert).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from pacsguard import __version__
from pacsguard.engines.channels.attempt import AttemptOutcome, Scrubber, one_line
from pacsguard.engines.channels.message import AlertMessage
from pacsguard.engines.channels.webhook_format import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    slack_body,
    webhook_body,
)

USER_AGENT = f"pacsguard/{__version__}"
# Besides 5xx: 408 Request Timeout, 425 Too Early and 429 Too Many Requests say "try again".
TRANSIENT_4XX = frozenset({408, 425, 429})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None  # urllib then raises HTTPError with the 3xx status, which we report


def safe_location(url: str) -> str:
    """scheme://host[:port] only: a Slack webhook's path is its credential, userinfo may be one too."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


def describe_network_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "host name not resolved"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "server closed the connection without answering"
    return f"{type(exc).__name__}: {exc}"


class HttpPoster:
    """POSTs bytes to one URL and turns every way that can go wrong into an AttemptOutcome."""

    def __init__(self, url: str, context: ssl.SSLContext, scrub: Scrubber) -> None:
        self.url = url
        self.where = safe_location(url)
        self.scrub = scrub
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect())

    def post(self, body: bytes, headers: Mapping[str, str], timeout: float) -> AttemptOutcome:
        request = urllib.request.Request(self.url, data=body, method="POST", headers=dict(headers))
        try:
            with self._opener.open(request, timeout=timeout) as response:
                response.read(65536)  # let the receiver finish; its body is not needed
                return AttemptOutcome("delivered", f"HTTP {response.status}", f"accepted by {self.where}")
        except urllib.error.HTTPError as exc:
            return self._http_error(exc)
        except urllib.error.URLError as exc:
            reason = exc.reason if isinstance(exc.reason, BaseException) else None
            if isinstance(reason, ssl.SSLCertVerificationError):
                # Trust is configuration: retrying cannot fix it, ca_bundle can.
                return AttemptOutcome("permanent", "TLS certificate not trusted", self.scrub(
                    f"{self.where}: {reason.verify_message or reason} (set the channel's ca_bundle for a private CA)"))
            text = describe_network_error(reason) if reason else str(exc.reason)
            return AttemptOutcome("transient", self.scrub(one_line(text, 80)), f"{self.where}: {self.scrub(text)}")
        except (OSError, http.client.HTTPException) as exc:  # timeouts and resets while reading
            text = describe_network_error(exc)
            return AttemptOutcome("transient", self.scrub(one_line(text, 80)), f"{self.where}: {self.scrub(text)}")

    def _http_error(self, exc: urllib.error.HTTPError) -> AttemptOutcome:
        code = exc.code
        try:
            said = exc.read(2048).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            said = ""
        said = self.scrub(one_line(said, 200))
        detail = f"{self.where} answered HTTP {code} {exc.reason}" + (f": {said}" if said else "")
        if 300 <= code < 400:
            return AttemptOutcome("permanent", f"HTTP {code}", detail + " (redirects are not followed: configure "
                                  "the final URL)")
        if code >= 500 or code in TRANSIENT_4XX:
            return AttemptOutcome("transient", f"HTTP {code}", detail,
                                  parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None))
        return AttemptOutcome("permanent", f"HTTP {code}", detail)


class WebhookTransport:
    """A signed JSON POST; see webhook_format for the body and the signature."""

    def __init__(self, channel: str, url: str, context: ssl.SSLContext, *, secret: SecretStr | None,
                 headers: Mapping[str, str], secret_headers: Mapping[str, SecretStr], scrub: Scrubber,
                 clock: Callable[[], float] = time.time) -> None:
        self.channel = channel
        self.poster = HttpPoster(url, context, scrub)
        self.secret = secret
        self.headers = dict(headers)
        self.secret_headers = dict(secret_headers)
        self.clock = clock

    def attempt(self, message: AlertMessage, delivery_id: str, attempt: int, timeout: float) -> AttemptOutcome:
        # A fresh timestamp per attempt: a receiver refusing old timestamps still accepts our retries.
        timestamp = int(self.clock())
        body = webhook_body(message, delivery_id=delivery_id, channel=self.channel, attempt=attempt,
                            timestamp=timestamp)
        headers = {**self.headers, **{k: v.get_secret_value() for k, v in self.secret_headers.items()},
                   "Content-Type": "application/json", "User-Agent": USER_AGENT,
                   IDEMPOTENCY_HEADER: delivery_id, TIMESTAMP_HEADER: str(timestamp)}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret.get_secret_value().encode("utf-8"), body)
        return self.poster.post(body, headers, timeout)


class SlackTransport:
    """A Slack incoming webhook: {"text": ...}. The URL is the credential, so it never appears in output."""

    def __init__(self, url: str, context: ssl.SSLContext, scrub: Scrubber) -> None:
        self.poster = HttpPoster(url, context, scrub)

    def attempt(self, message: AlertMessage, delivery_id: str, attempt: int, timeout: float) -> AttemptOutcome:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        return self.poster.post(slack_body(message), headers, timeout)
