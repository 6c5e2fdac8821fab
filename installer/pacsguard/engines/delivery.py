"""Deliver one alert message to one channel, for the pack's own engine (docs/design.md, D9).

`deliver()` makes up to `policy.max_attempts` attempts within `policy.total_seconds`, waiting
between them with exponential back-off and jitter (longer when the server sends Retry-After),
and stops at once on a failure that retrying cannot fix. It never raises for a failed delivery:
the engine stores the DeliveryResult on the alert and tries again later with the SAME
delivery_id, which receivers use to drop duplicates (webhook Idempotency-Key, e-mail Message-ID).

Wire formats and the signature scheme: docs/alerting.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import SecretStr

from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Channel, DeliveryPolicy
from pacsguard.engines.channels.attempt import AttemptOutcome, Scrubber, Transport
from pacsguard.engines.channels.http_transport import SlackTransport, WebhookTransport
from pacsguard.engines.channels.inbox import InboxTransport
from pacsguard.engines.channels.message import AlertMessage, check_delivery_id
from pacsguard.engines.channels.smtp_transport import SmtpTransport
from pacsguard.engines.channels.tls import client_context
from pacsguard.engines.channels.webhook_format import RESERVED_HEADERS

__all__ = ["AlertMessage", "DeliveryResult", "Lanes", "StopReason", "backoff_seconds", "deliver",
           "delivery_problems"]

log = logging.getLogger("pacsguard.delivery")
# A signing key shorter than this is guessable offline from one signed body.
MIN_SECRET_LENGTH = 16

# delivered: done. permanent: the receiver refused in a way retrying cannot fix (or a bug).
# attempts-exhausted / time-exhausted: transient failures outlasted the policy; try again later.
# not-configured: the channel lacks what the pack's own delivery needs; nothing was sent.
StopReason = Literal["delivered", "permanent", "attempts-exhausted", "time-exhausted", "not-configured"]


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one delivery; to_dict() is what the engine stores on the alert. No secrets."""

    channel: str
    channel_type: str
    delivery_id: str
    ok: bool
    reason: StopReason
    attempts: int
    status: str                       # the last attempt's status: "HTTP 200", "SMTP 535", "connection refused"
    error: str | None                 # why it failed, for a person (None when ok)
    detail: str                       # what the last attempt said (on success: who accepted it)
    history: tuple[str, ...]          # each attempt's status, in order
    started_at: dt.datetime
    finished_at: dt.datetime
    retry_after_seconds: float | None = None  # the receiver's last Retry-After, for the engine's next try
    refused_recipients: tuple[str, ...] = ()  # e-mail: addresses the server refused for good

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel, "channel_type": self.channel_type, "delivery_id": self.delivery_id,
            "ok": self.ok, "reason": self.reason, "attempts": self.attempts, "status": self.status,
            "error": self.error, "detail": self.detail, "history": list(self.history),
            "started_at": self.started_at.isoformat(), "finished_at": self.finished_at.isoformat(),
            "retry_after_seconds": self.retry_after_seconds, "refused_recipients": list(self.refused_recipients),
        }


def backoff_seconds(attempt: int, policy: DeliveryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Wait after failed attempt `attempt` (1-based): exponential, capped, with "equal jitter" --
    half fixed so a struggling receiver always gets a pause, half random so many alerts failing
    together do not retry in lockstep."""
    ceiling = min(policy.max_backoff_seconds, policy.initial_backoff_seconds * 2 ** (attempt - 1))
    return ceiling / 2 + rand() * ceiling / 2


def delivery_problems(channel: Channel, environ: Mapping[str, str] | None = None) -> list[str]:
    """Everything that keeps the pack's own engine from delivering to this channel, without sending.

    For `watch` start-up and `status`: each problem names the channel and the field to fix.
    """
    problems = _static_problems(channel)
    for resolve in (channel.resolved_url, lambda env: _signing_secret(channel, env), channel.resolved_password,
                    channel.resolved_headers):
        try:
            resolve(environ)
        except PacsguardError as exc:
            problems.append(str(exc))
    return problems


def _signing_secret(channel: Channel, environ: Mapping[str, str] | None) -> SecretStr | None:
    secret = channel.resolved_secret(environ)
    if secret is not None and len(secret.get_secret_value()) < MIN_SECRET_LENGTH:
        source = f"environment variable {channel.secret_env}" if channel.secret_env else str(channel.secret_file)
        raise PacsguardError(f"notifications channel {channel.name}: the signing secret in {source} is shorter "
                             f"than {MIN_SECRET_LENGTH} characters")
    return secret


def deliver(channel: Channel, message: AlertMessage, *, delivery_id: str, policy: DeliveryPolicy | None = None,
            environ: Mapping[str, str] | None = None, sleep: Callable[[float], None] = time.sleep) -> DeliveryResult:
    """Deliver `message` on `channel`; see the module docstring. Raises only ValueError for a
    malformed delivery_id (a caller bug); every delivery failure is in the result."""
    check_delivery_id(delivery_id)
    policy = policy or DeliveryPolicy()
    started = dt.datetime.now(dt.timezone.utc)

    def result(reason: StopReason, attempts: int, history: list[str], last: AttemptOutcome | None,
               error: str | None, transport: Transport | None = None) -> DeliveryResult:
        refused = tuple(transport.refused) if isinstance(transport, SmtpTransport) else ()
        return DeliveryResult(
            channel=channel.name, channel_type=channel.type, delivery_id=delivery_id, ok=reason == "delivered",
            reason=reason, attempts=attempts, status=last.status if last else "", error=error,
            detail=last.detail if last else (error or ""), history=tuple(history), started_at=started,
            finished_at=dt.datetime.now(dt.timezone.utc),
            retry_after_seconds=last.retry_after if last else None, refused_recipients=refused)

    try:
        transport = _transport_for(channel, environ)
    except PacsguardError as exc:
        return result("not-configured", 0, [], None, str(exc))

    deadline = time.monotonic() + policy.total_seconds
    history: list[str] = []
    last: AttemptOutcome | None = None
    for attempt in range(1, policy.max_attempts + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return result("time-exhausted", attempt - 1, history, last,
                          _gave_up(f"time budget of {policy.total_seconds:g} s spent", attempt - 1, last), transport)
        try:
            last = transport.attempt(message, delivery_id, attempt, min(policy.attempt_timeout_seconds, remaining))
        except Exception as exc:  # a bug in a transport must not stop the engine; it is logged in full
            log.exception("channel %s: delivery %s failed unexpectedly", channel.name, delivery_id)
            last = AttemptOutcome("permanent", "internal error", f"{type(exc).__name__} (see the pacsguard log)")
        history.append(last.status)
        log.debug("channel %s: delivery %s attempt %d: %s", channel.name, delivery_id, attempt, last.status)
        if last.verdict == "delivered":
            return result("delivered", attempt, history, last, None, transport)
        if last.verdict == "permanent":
            return result("permanent", attempt, history, last,
                          f"not retried ({last.status}): {last.detail}", transport)
        if attempt == policy.max_attempts:
            break
        wait = max(backoff_seconds(attempt, policy), last.retry_after or 0.0)
        if time.monotonic() + wait >= deadline:
            why = (f"the receiver asked to retry after {last.retry_after:g} s" if last.retry_after
                   and last.retry_after >= wait else "the next back-off")
            return result("time-exhausted", attempt, history, last,
                          _gave_up(f"{why} would pass the time budget of {policy.total_seconds:g} s", attempt, last),
                          transport)
        sleep(wait)
    return result("attempts-exhausted", policy.max_attempts, history, last,
                  _gave_up(f"{policy.max_attempts} attempts failed", policy.max_attempts, last), transport)


class Lanes:
    """One delivery lane per channel: a receiver that hangs holds back only its own channel.

    Each lane has LANE_WORKERS threads of its own; a delivery in it is bounded by the delivery
    policy (attempt timeout and total time), so a hung receiver delays the next message on
    its channel by at most that bound, and the other channels not at all."""

    LANE_WORKERS = 2

    def __init__(self) -> None:
        self._lanes: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def submit(self, lane: str, fn: Callable[..., DeliveryResult], *args: Any, **kwargs: Any) -> Future[DeliveryResult]:
        with self._lock:
            pool = self._lanes.get(lane)
            if pool is None:
                pool = self._lanes[lane] = ThreadPoolExecutor(
                    max_workers=self.LANE_WORKERS, thread_name_prefix=f"pacsguard-delivery-{lane}")
        return pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            pools = list(self._lanes.values())
        for pool in pools:
            pool.shutdown(wait=wait)


def _gave_up(why: str, attempts: int, last: AttemptOutcome | None) -> str:
    tail = f"; last: {last.status}: {last.detail}" if last else ""
    return f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}: {why}{tail}"


def _static_problems(channel: Channel) -> list[str]:
    """What the settings lack for the pack's own delivery (Alerting's channels need other fields)."""
    where = f"notifications channel {channel.name} ({channel.type})"
    problems: list[str] = []
    if channel.type == "chime":
        problems.append(f"{where}: chime is delivered only by Alerting's Notifications plugin; "
                        "use webhook, slack or smtp with the pacsguard engine")
    if channel.type in ("webhook", "slack") and not (channel.url or channel.url_env or channel.url_file):
        problems.append(f"{where}: needs url, url_env or url_file")
    if channel.type == "webhook":
        for header in [*channel.headers, *channel.headers_from_env]:
            if header.lower() in RESERVED_HEADERS:
                problems.append(f"{where}: header {header} is set by pacsguard and cannot be overridden")
        for header, value in channel.headers.items():
            if "\r" in value or "\n" in value:
                problems.append(f"{where}: header {header} contains a line break")
    if channel.type == "smtp":
        for needed in ("host", "from_address"):
            if getattr(channel, needed) is None:
                problems.append(f"{where}: needs {needed}")
        if not channel.recipients:
            problems.append(f"{where}: needs recipients")
        if channel.username is not None and channel.security == "none":
            problems.append(f"{where}: security none would send the password in clear text; use starttls or tls")
        if channel.username is not None and not (channel.password_env or channel.password_file):
            problems.append(f"{where}: username is set but neither password_env nor password_file")
    if channel.type == "inbox" and channel.path is None:
        problems.append(f"{where}: needs path")
    if channel.ca_bundle is not None and not channel.ca_bundle.is_file():
        problems.append(f"{where}: ca_bundle {channel.ca_bundle} does not exist")
    return problems


def _transport_for(channel: Channel, environ: Mapping[str, str] | None) -> Transport:
    problems = _static_problems(channel)
    if problems:
        raise PacsguardError("; ".join(problems))
    if channel.type == "inbox":
        assert channel.path is not None  # _static_problems checked
        return InboxTransport(channel.path)
    what = f"notifications channel {channel.name}"
    context = client_context(channel.ca_bundle, channel.verify_tls, what)
    if channel.type == "smtp":
        password = channel.resolved_password(environ)
        assert channel.host is not None and channel.from_address is not None  # _static_problems checked
        return SmtpTransport(
            host=channel.host, port=channel.smtp_port(), security=channel.security, context=context,
            username=channel.username, password=password, from_address=channel.from_address,
            recipients=list(channel.recipients),
            scrub=Scrubber(password.get_secret_value() if password else "", username=channel.username))
    url = channel.resolved_url(environ)
    assert url is not None
    if channel.type == "slack":
        return SlackTransport(url, context, Scrubber(url))
    secret = _signing_secret(channel, environ)
    secret_headers = channel.resolved_headers(environ)
    for header, value in secret_headers.items():
        if "\r" in value.get_secret_value() or "\n" in value.get_secret_value():
            raise PacsguardError(f"{what}: header {header} (from env) contains a line break")
    scrub = Scrubber(url, secret.get_secret_value() if secret else "",
                     *(v.get_secret_value() for v in secret_headers.values()))
    return WebhookTransport(channel.name, url, context, secret=secret, headers=channel.headers,
                            secret_headers=secret_headers, scrub=scrub)
