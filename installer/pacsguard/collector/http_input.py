"""An HTTP endpoint for FHIR AuditEvents (IHE BALP / ATNA FHIR feed), standard library only.

    POST /fhir/AuditEvent   one AuditEvent
    POST /fhir              an AuditEvent, or a Bundle: one event per entry
    GET  /health            the counters, as JSON

Answers: 202 with counts and the events' ids; 400 with an OperationOutcome for
invalid JSON, a resource that is not an AuditEvent (a Bundle is refused whole
if any entry is not one, so a client never has to guess which part landed);
413 over the size limit; 411 without Content-Length (chunked bodies are not
supported). Every refused event is counted as rejected.

A minimal HTTP/1.1 server on asyncio streams (keep-alive, Expect:
100-continue) rather than http.server, so it shares the collector's event
loop, queue and back-pressure: a full queue makes the client wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

from pacsguard.collector.connections import TrackedServer
from pacsguard.collector.counters import Counters
from pacsguard.collector.events import Event, NetworkIds, decode
from pacsguard.collector.ratelog import RateLimitedLog
from pacsguard.collector.sender import Sender

log = logging.getLogger("pacsguard.collector")
SOURCE = "http"
MAX_HEADER_LINE = 16 * 1024
MAX_HEADERS = 100
IDLE_TIMEOUT = 60.0
REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           411: "Length Required", 413: "Content Too Large", 431: "Request Header Fields Too Large",
           503: "Service Unavailable"}


class HttpError(Exception):
    def __init__(self, status: int, message: str, rejected: int = 0, reason: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.rejected = rejected
        self.reason = reason


def outcome(message: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": message}]}


def split_resources(body: bytes, path: str, counters: Counters) -> list[str]:
    """The messages to send for a request body; raises HttpError for a refused request."""
    text, bad = decode(body)
    if bad:
        counters.note("decode_errors")
    try:
        resource = json.loads(text)
    except ValueError as exc:
        raise HttpError(400, f"invalid JSON: {exc}", 1, "invalid_json") from None
    if not isinstance(resource, dict):
        raise HttpError(400, "the body must be a JSON object (a FHIR resource)", 1, "not_auditevent")
    kind = resource.get("resourceType")
    if kind == "AuditEvent":
        return [text]
    if kind == "Bundle" and path == "/fhir":
        entries = resource.get("entry")
        if not isinstance(entries, list) or not entries:
            raise HttpError(400, "Bundle has no entry", 1, "not_auditevent")
        messages = []
        for number, entry in enumerate(entries):
            inner = entry.get("resource") if isinstance(entry, dict) else None
            inner_kind = inner.get("resourceType") if isinstance(inner, dict) else None
            if inner_kind != "AuditEvent":
                raise HttpError(400, f"Bundle.entry[{number}].resource is {inner_kind or 'missing'}, not an "
                                     "AuditEvent: nothing of this Bundle was accepted", len(entries), "not_auditevent")
            messages.append(json.dumps(inner, ensure_ascii=False))
        return messages
    expected = "an AuditEvent" if path == "/fhir/AuditEvent" else "an AuditEvent or a Bundle of AuditEvents"
    raise HttpError(400, f"resourceType is {kind!r}, expected {expected}", 1, "not_auditevent")


class FhirHttpServer(TrackedServer):
    def __init__(self, sender: Sender, counters: Counters, ids: NetworkIds, max_event_bytes: int,
                 max_body_bytes: int, health: Callable[[], dict[str, Any]]) -> None:
        self.sender = sender
        self.counters = counters
        self.ids = ids
        self.max_event_bytes = max_event_bytes
        self.max_body_bytes = max_body_bytes
        self.health = health
        self.rlog = RateLimitedLog(log)
        super().__init__()

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Listen (with TLS when a context is given: PHI should not cross a network in clear)."""
        self.server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEADER_LINE, ssl=tls)
        return int(self.server.sockets[0].getsockname()[1])

    # ------------------------------------------------------------ protocol

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.tracked():
            try:
                keep_alive = True
                while keep_alive:
                    keep_alive = await self._request(reader, writer)
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection should close."""
        try:
            line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
        except (ValueError, asyncio.LimitOverrunError):
            await self._send(writer, 431, outcome("request line too long"), close=True)
            return False
        if not line:
            return False
        parts = line.decode("latin-1").strip().split(" ")
        if len(parts) != 3:
            await self._send(writer, 400, outcome("malformed HTTP request line"), close=True)
            return False
        method, target, version = parts
        headers = await self._headers(reader, writer)
        if headers is None:
            return False
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        path = target.split("?", 1)[0].rstrip("/") or "/"

        if path == "/health":
            if method != "GET":
                await self._send(writer, 405, outcome("use GET /health"), keep_alive)
                return keep_alive
            await self._send(writer, 200, self.health(), keep_alive)
            return keep_alive
        if path not in ("/fhir", "/fhir/AuditEvent"):
            await self._send(writer, 404, outcome(f"no such endpoint {path}: POST to /fhir or /fhir/AuditEvent"),
                             keep_alive=False)
            return False
        if method != "POST":
            await self._send(writer, 405, outcome(f"use POST {path}"), keep_alive=False)
            return False
        if "chunked" in headers.get("transfer-encoding", "").lower() or "content-length" not in headers:
            await self._send(writer, 411, outcome("send the body with a Content-Length header"), keep_alive=False)
            return False
        try:
            length = int(headers["content-length"])
        except ValueError:
            await self._send(writer, 400, outcome("Content-Length is not a number"), keep_alive=False)
            return False
        if length > self.max_body_bytes:
            # Refuse before reading: a client that ignores 413 gets a closed connection.
            self.counters.reject_new(SOURCE, "oversize")
            self.rlog.warning("oversize", "http: rejected a %d-byte body, above the %d-byte limit",
                              length, self.max_body_bytes)
            await self._send(writer, 413, outcome(f"body is {length} bytes, above the {self.max_body_bytes}-byte "
                                                  "limit"), keep_alive=False)
            return False
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await asyncio.wait_for(reader.readexactly(length), IDLE_TIMEOUT)
        status, answer = await self._accept(body, path)
        await self._send(writer, status, answer, keep_alive)
        return keep_alive

    async def _headers(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, str] | None:
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            try:
                line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
            except (ValueError, asyncio.LimitOverrunError):
                await self._send(writer, 431, outcome("header line too long"), close=True)
                return None
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        await self._send(writer, 431, outcome("too many header lines"), close=True)
        return None

    async def _accept(self, body: bytes, path: str) -> tuple[int, dict[str, Any]]:
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
        ids: list[str] = []
        refused = 0
        for message in messages:
            event = Event(self.ids.next(SOURCE), message, SOURCE)
            if await self.sender.submit(event):
                ids.append(event.id)
            else:
                refused += 1  # shutting down: counted as rejected by the sender
        if refused:
            return 503, {**outcome("the collector is shutting down"), "accepted": len(ids), "rejected": refused,
                         "ids": ids}
        return 202, {"accepted": len(ids), "rejected": 0, "ids": ids}

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any], keep_alive: bool = True,
                    close: bool = False) -> None:
        keep_alive = keep_alive and not close
        data = json.dumps(body, default=str).encode()
        content_type = "application/fhir+json" if body.get("resourceType") == "OperationOutcome" else "application/json"
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        writer.write(head.encode("latin-1") + data)
        await writer.drain()
