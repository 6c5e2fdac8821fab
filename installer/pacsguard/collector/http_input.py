"""An HTTP endpoint for FHIR AuditEvents (IHE BALP / ATNA FHIR feed), standard library only.

    POST /fhir/AuditEvent   one AuditEvent
    POST /fhir              an AuditEvent, or a Bundle: one event per entry
    GET  /health            the counters, as JSON (and which instance answers: ``instance``)
    GET  /ready             200 {"ready": true} while the instance takes events, else 503 with
                            the reason: for a load balancer's health check, so without a token
                            (it says nothing else)

A request may carry ``Idempotency-Key: <key>`` (1-255 visible ASCII characters, optionally in
double quotes): its events' ids then follow from the key and the body (events.idempotent_ids),
so a sender that retries a request whose answer it never got (an instance behind a balancer
died with it) stores each event once, whichever instance takes the retry.

Every request needs ``Authorization: Bearer <token>`` (the token from
PACSGUARD_COLLECTOR_TOKEN or a file), unless the listener is HTTPS with
client certificates required, which authenticate the sender in the handshake;
``/health`` too (the counters say which sources send, and how much).

Every request gets an answer, and every refused one is counted as rejected
with its reason: 202 with counts and the events' ids; 400 (OperationOutcome)
for invalid JSON, JSON nested deeper than 64 levels, a negative or malformed
Content-Length, a resource that is not an AuditEvent or lacks what FHIR
requires of one (recorded, agent, type/code), a Bundle over
``MAX_BUNDLE_ENTRIES`` (a Bundle is refused whole, so a client never has to
guess which part landed); 401 without a valid token; 413 over the size limit;
503 when the input's buffer budget is spent; 507 (with Retry-After) while the
journal cannot be written (disk full): nothing of that request was taken.
Bodies come with Content-Length or chunked transfer coding. A request that
never completed (408, or refused for the buffer budget) carried no event: it
is counted in the input's ``refused`` (limits.py), not as a rejected event.

A minimal HTTP/1.1 server on asyncio streams (keep-alive, Expect:
100-continue) rather than http.server, so it shares the collector's event
loop and journal: a 202 is sent only once the events are in the journal.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

from pacsguard.collector.connections import TrackedServer, start_tls
from pacsguard.collector.counters import Counters
from pacsguard.collector.events import Event, NetworkIds, decode, idempotent_ids
from pacsguard.collector.limits import Gate, Limits, Ticket
from pacsguard.collector.ratelog import RateLimitedLog
from pacsguard.collector.sender import Sender

log = logging.getLogger("pacsguard.collector")
SOURCE = "http"
MAX_HEADER_LINE = 16 * 1024
MAX_HEADERS = 100
KEEP_ALIVE_IDLE = 60.0
MAX_JSON_DEPTH = 64
MAX_BUNDLE_ENTRIES = 1000
REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 501: "Not Implemented", 503: "Service Unavailable",
           507: "Insufficient Storage"}


class HttpError(Exception):
    def __init__(self, status: int, message: str, rejected: int = 0, reason: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.rejected = rejected
        self.reason = reason


def outcome(message: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": message}]}


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether brackets nest deeper than ``limit`` (outside strings): checked before json.loads,
    whose recursion a 100k-deep body would exhaust."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def missing_required(resource: dict[str, Any]) -> list[str]:
    """What FHIR requires of an AuditEvent (R4: type, recorded, agent, source; R5: code) that is absent."""
    missing = []
    if not isinstance(resource.get("recorded"), str) or not resource["recorded"].strip():
        missing.append("recorded")
    if not isinstance(resource.get("agent"), list) or not resource["agent"]:
        missing.append("agent")
    if not isinstance(resource.get("type"), dict) and not isinstance(resource.get("code"), dict):
        missing.append("type (R4) or code (R5)")
    return missing


def split_resources(body: bytes, path: str, counters: Counters) -> list[str]:
    """The messages to send for a request body; raises HttpError for a refused request."""
    text, bad = decode(body)
    if bad:
        counters.note("decode_errors")
    if json_depth_exceeds(text):
        raise HttpError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels", 1, "json_too_deep")
    try:
        resource = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, f"invalid JSON: {exc}", 1, "invalid_json") from None
    if not isinstance(resource, dict):
        raise HttpError(400, "the body must be a JSON object (a FHIR resource)", 1, "not_auditevent")
    kind = resource.get("resourceType")
    if kind == "AuditEvent":
        missing = missing_required(resource)
        if missing:
            raise HttpError(400, f"AuditEvent lacks {', '.join(missing)} (required by FHIR)", 1, "invalid_auditevent")
        return [text]
    if kind == "Bundle" and path == "/fhir":
        entries = resource.get("entry")
        if not isinstance(entries, list) or not entries:
            raise HttpError(400, "Bundle has no entry", 1, "not_auditevent")
        if len(entries) > MAX_BUNDLE_ENTRIES:
            raise HttpError(413, f"Bundle has {len(entries)} entries, above the limit of {MAX_BUNDLE_ENTRIES}: "
                                 "nothing of this Bundle was accepted", len(entries), "bundle_too_large")
        messages = []
        for number, entry in enumerate(entries):
            inner = entry.get("resource") if isinstance(entry, dict) else None
            inner_kind = inner.get("resourceType") if isinstance(inner, dict) else None
            if inner_kind != "AuditEvent":
                raise HttpError(400, f"Bundle.entry[{number}].resource is {inner_kind or 'missing'}, not an "
                                     "AuditEvent: nothing of this Bundle was accepted", len(entries), "not_auditevent")
            assert isinstance(inner, dict)
            missing = missing_required(inner)
            if missing:
                raise HttpError(400, f"Bundle.entry[{number}].resource lacks {', '.join(missing)} (required by "
                                     "FHIR): nothing of this Bundle was accepted", len(entries), "invalid_auditevent")
            messages.append(json.dumps(inner, ensure_ascii=False))
        return messages
    expected = "an AuditEvent" if path == "/fhir/AuditEvent" else "an AuditEvent or a Bundle of AuditEvents"
    raise HttpError(400, f"resourceType is {kind!r}, expected {expected}", 1, "not_auditevent")


class FhirHttpServer(TrackedServer):
    def __init__(self, sender: Sender, counters: Counters, ids: NetworkIds, max_event_bytes: int,
                 max_body_bytes: int, health: Callable[[], dict[str, Any]], limits: Limits | None = None,
                 token: str | None = None, client_certificates: bool = False) -> None:
        self.sender = sender
        self.counters = counters
        self.ids = ids
        self.max_event_bytes = max_event_bytes
        self.max_body_bytes = max_body_bytes
        self.health = health
        self.gate = Gate(limits or Limits())
        self._token = token.encode() if token else None
        self._client_certificates = client_certificates
        self._tls: ssl.SSLContext | None = None
        self.rlog = RateLimitedLog(log)
        self.port = 0
        super().__init__()

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Listen (with TLS when a context is given: PHI should not cross a network in clear)."""
        # Plain TCP at the listener: the TLS handshake starts only once the gate admitted the connection.
        self._tls = tls
        self.server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEADER_LINE)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    # ------------------------------------------------------------ protocol

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ticket, peer = await self.admit(self.gate, reader, writer)
        if isinstance(ticket, str):  # a connection, not an event: counted in the input's `refused`
            self.rlog.warning(ticket, "http: refused a connection from %s (%s)", peer, ticket)
            if self._tls is None:
                try:
                    await self._send(writer, 503, outcome(f"connection refused: {ticket.replace('_', ' ')}"),
                                     close=True)
                except (ConnectionError, OSError):
                    pass
            writer.close()
            return
        with self.tracked():
            try:
                if self._tls is not None and not await start_tls(writer, reader, self._tls,
                                                                 self.gate.limits.handshake_timeout):
                    self.gate.refuse("tls_handshake")
                    return
                keep_alive = True
                while keep_alive:
                    keep_alive = await self._request(reader, writer, ticket)
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                    asyncio.CancelledError):
                pass
            finally:
                self.gate.leave(ticket)
                writer.close()

    async def _refuse(self, writer: asyncio.StreamWriter, status: int, message: str, reason: str,
                      keep_alive: bool = False, rejected: int = 1, event: bool = True) -> bool:
        """Answer and count a refused request; returns whether the connection stays open.

        ``event=False``: no complete request arrived (a timeout, the buffer budget): counted in the
        input's ``refused``, not as a received event.
        """
        if event:
            self.counters.reject_new(SOURCE, reason, rejected)
        else:
            self.gate.refuse(reason)
            rejected = 0
        self.rlog.warning(reason, "http: HTTP %d: %s", status, message)
        answer = outcome(message)
        answer.update(accepted=0, rejected=rejected)
        await self._send(writer, status, answer, keep_alive, extra=(
            "WWW-Authenticate: Bearer realm=\"pacsguard\"\r\n" if status == 401 else ""))
        return keep_alive

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ticket: Ticket) -> bool:
        """Serve one request; False when the connection should close."""
        loop = asyncio.get_running_loop()
        limits = self.gate.limits
        try:
            line = await asyncio.wait_for(reader.readline(), min(limits.idle_timeout, KEEP_ALIVE_IDLE))
        except (ValueError, asyncio.LimitOverrunError):
            return await self._refuse(writer, 431, "request line too long", "http_malformed")
        if not line:
            return False
        ticket.touch()
        # The whole request (headers and body) must arrive within request_timeout of its first line:
        # a client trickling one header line at a time does not extend it.
        deadline = loop.time() + limits.request_timeout
        parts = line.decode("latin-1").strip().split(" ")
        if len(parts) != 3:
            return await self._refuse(writer, 400, "malformed HTTP request line", "http_malformed")
        method, target, version = parts
        try:
            headers = await self._headers(reader, deadline)
        except asyncio.TimeoutError:
            return await self._refuse(writer, 408, "request headers not received in time", "http_timeout",
                                      event=False)
        except HttpError as exc:
            return await self._refuse(writer, exc.status, str(exc), exc.reason)
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        path = target.split("?", 1)[0].rstrip("/") or "/"

        if path == "/ready" and method == "GET":
            fault = self.sender.fault or ("shutting down" if self.sender.closing else None)
            await self._send(writer, 503 if fault else 200, {"ready": not fault, **({"reason": fault} if fault else {})},
                             keep_alive)
            return keep_alive
        if not self._authorized(headers):
            return await self._refuse(writer, 401, "a valid bearer token is required (Authorization: Bearer ...)",
                                      "unauthorized")
        if path == "/health":
            if method != "GET":
                return await self._refuse(writer, 405, "use GET /health", "http_method", keep_alive)
            await self._send(writer, 200, self.health(), keep_alive)
            return keep_alive
        if path not in ("/fhir", "/fhir/AuditEvent"):
            return await self._refuse(writer, 404, f"no such endpoint {path}: POST to /fhir or /fhir/AuditEvent",
                                      "http_not_found")
        if method != "POST":
            return await self._refuse(writer, 405, f"use POST {path}", "http_method")
        key = headers.get("idempotency-key")
        if key is not None:
            key = key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key
            if not 0 < len(key) <= 255 or not all("!" <= c <= "~" for c in key):
                return await self._refuse(writer, 400, "Idempotency-Key must be 1 to 255 visible ASCII characters",
                                          "bad_idempotency_key")
        encoding = headers.get("transfer-encoding", "").lower().strip()
        chunked = encoding == "chunked"
        if encoding and not chunked:
            return await self._refuse(writer, 501, f"Transfer-Encoding {encoding!r} is not supported: send "
                                                   "Content-Length or chunked", "http_malformed")
        length = -1
        if not chunked:
            if "content-length" not in headers:
                return await self._refuse(writer, 411, "send the body with a Content-Length header or chunked",
                                          "http_length_required")
            text = headers["content-length"]
            if not text.isdigit():  # "-1", "1e3", " 12 x": never read a length we do not understand
                return await self._refuse(writer, 400, f"Content-Length {text[:40]!r} is not a non-negative integer",
                                          "http_malformed")
            length = int(text)
            if length > self.max_body_bytes:
                # Refuse before reading: a client that ignores 413 gets a closed connection.
                return await self._refuse(writer, 413, f"body is {length} bytes, above the {self.max_body_bytes}"
                                                       "-byte limit", "oversize")
        reserve = length if length >= 0 else min(self.max_body_bytes, 1024 * 1024)
        if not self.gate.reserve(reserve):
            return await self._refuse(writer, 503, "the collector holds as many request bodies as it may: retry "
                                                   "later", "buffer_budget", event=False)
        try:
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                remaining = max(0.0, deadline - loop.time())
                if chunked:
                    body = await asyncio.wait_for(self._chunked_body(reader), remaining)
                else:
                    body = await asyncio.wait_for(reader.readexactly(length), remaining)
            except asyncio.TimeoutError:
                return await self._refuse(writer, 408, "request body not received in time", "http_timeout",
                                          event=False)
            except HttpError as exc:
                return await self._refuse(writer, exc.status, str(exc), exc.reason)
            ticket.touch()
            ticket.busy = True
            status, answer = await self._accept(body, path, key)
            ticket.busy = False
        finally:
            self.gate.release(reserve)
        await self._send(writer, status, answer, keep_alive)
        return keep_alive

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self._client_certificates:
            return True  # the TLS handshake required and verified a client certificate
        if self._token is None:
            return True  # anonymous only by explicit configuration (CollectorConfig.http_anonymous)
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token)

    async def _headers(self, reader: asyncio.StreamReader, deadline: float) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            try:
                line = await asyncio.wait_for(reader.readline(), max(0.0, deadline - loop.time()))
            except (ValueError, asyncio.LimitOverrunError):
                raise HttpError(431, "header line too long", reason="http_malformed") from None
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, _, value = line.decode("latin-1").partition(":")
            key = name.strip().lower()
            if key in headers and key in ("content-length", "transfer-encoding"):
                raise HttpError(400, f"{key} given twice", reason="http_malformed")  # request smuggling
            headers[key] = value.strip()
        raise HttpError(431, "too many header lines", reason="http_malformed")

    async def _chunked_body(self, reader: asyncio.StreamReader) -> bytes:
        """A chunked body (RFC 9112 7.1), bounded by the body limit."""
        body = bytearray()
        while True:
            try:
                size_line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                raise HttpError(400, "chunk size line too long", reason="http_malformed") from None
            text = size_line.split(b";", 1)[0].strip()
            if not text or any(c not in b"0123456789abcdefABCDEF" for c in text) or len(text) > 8:
                raise HttpError(400, f"bad chunk size {text[:20]!r}", reason="http_malformed")
            size = int(text, 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers: ignored
                return bytes(body)
            if len(body) + size > self.max_body_bytes:
                raise HttpError(413, f"chunked body above the {self.max_body_bytes}-byte limit", reason="oversize")
            body += await reader.readexactly(size)
            await reader.readexactly(2)  # CRLF after the chunk

    async def _accept(self, body: bytes, path: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
        try:
            messages = split_resources(body, path, self.counters)
            too_big = [len(m) for m in messages if len(m) > self.max_event_bytes]
            if too_big:
                raise HttpError(413, f"an AuditEvent is {max(too_big)} bytes, above the {self.max_event_bytes}-byte "
                                     "limit: nothing of this request was accepted", len(messages), "oversize")
        except HttpError as exc:
            self.counters.reject_new(SOURCE, exc.reason, exc.rejected or 1)
            self.rlog.warning(exc.reason, "http: HTTP %d: %s", exc.status, exc)
            answer = outcome(str(exc))
            answer.update(accepted=0, rejected=exc.rejected or 1)
            return exc.status, answer
        ids = idempotent_ids(key, body, len(messages)) if key else [self.ids.next(SOURCE) for _ in messages]
        events = [Event(event_id, message, SOURCE) for event_id, message in zip(ids, messages)]
        # In the journal before the 202; a journal that cannot be written refuses at once (507), whole.
        taken = await self.sender.submit_many(events, wait_on_fault=False)
        ids = [e.id for e in events[:taken]]
        if taken < len(events):
            if self.sender.fault is not None:
                self.rlog.warning("journal_unwritable", "http: HTTP 507: the journal cannot be written (%s)",
                                  self.sender.fault)
                return 507, {**outcome(f"the collector cannot store events now: {self.sender.fault}; retry later"),
                             "accepted": taken, "rejected": len(events) - taken, "ids": ids}
            return 503, {**outcome("the collector is shutting down"), "accepted": taken,
                         "rejected": len(events) - taken, "ids": ids}
        return 202, {"accepted": taken, "rejected": 0, "ids": ids}

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any], keep_alive: bool = True,
                    close: bool = False, extra: str = "") -> None:
        keep_alive = keep_alive and not close
        data = json.dumps(body, default=str).encode()
        content_type = "application/fhir+json" if body.get("resourceType") == "OperationOutcome" else "application/json"
        if status in (503, 507):
            extra += "Retry-After: 5\r\n"
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n{extra}"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        writer.write(head.encode("latin-1") + data)
        await writer.drain()
