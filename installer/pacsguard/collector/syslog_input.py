"""Syslog receivers: UDP (RFC 5426), TCP (RFC 6587) and TLS (RFC 5425).

One frame becomes one event:
- an ATNA frame (MSGID in ATNA_MSGIDS, or a payload that starts with
  ``<?xml`` / ``<AuditMessage``) becomes the ATNA envelope (atna_envelope.py);
- any other RFC 5424 frame sends its MSG as ``message`` (a Keycloak line or a
  JSON event forwarded by rsyslog): the router recognises it or keeps it in
  the failure index;
- over TCP/TLS a frame that is not RFC 5424 at all is still sent as
  ``message``, so the failure index keeps it; over UDP such a datagram (cut by
  the network or garbled) is rejected and counted, as RFC 5426 receivers do.

Frames above ``max_bytes`` are rejected with a counter and a log line. The TCP
framer skips an oversize frame without buffering it and resynchronises on the
next one, so a 5 MB message costs that message only, not the connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsguard.collector.atna_envelope import atna_message, is_xml_payload
from pacsguard.collector.connections import TrackedServer
from pacsguard.collector.counters import Counters
from pacsguard.collector.events import Event, NetworkIds, decode
from pacsguard.collector.ratelog import RateLimitedLog
from pacsguard.collector.sender import Sender
from pacsguard.parsers.syslog import OctetCountingFramer, OversizeFrame, SyslogParseError, parse_rfc5424

log = logging.getLogger("pacsguard.collector")
UTF8_BOM = b"\xef\xbb\xbf"
READ_CHUNK = 256 * 1024


@dataclass
class Converted:
    message: str
    decode_error: bool
    atna_error: str | None


def convert_frame(frame: bytes, max_bytes: int, strict: bool) -> Converted:
    """One syslog frame -> the text to send as ``message``.

    With ``strict`` (UDP) a frame that is not RFC 5424 raises SyslogParseError.
    """
    hostname: str | None = None
    timestamp: str | None = None
    try:
        parsed = parse_rfc5424(frame)
        payload, hostname, timestamp, atna = parsed.msg, parsed.hostname, parsed.timestamp, parsed.is_atna
    except SyslogParseError:
        bare = frame.lstrip(b" \t\r\n").removeprefix(UTF8_BOM)
        if not is_xml_payload(bare):
            if strict:
                raise
            text, bad = decode(frame)
            return Converted(text, bad, None)
        payload, atna = bare, True  # bare XML, no syslog header (some senders do this over TCP)
    if atna or is_xml_payload(payload):
        frame_text, bad_frame = decode(frame.replace(UTF8_BOM, b"", 1))
        xml_text, bad_xml = decode(payload)
        message, error = atna_message(frame_text, xml_text, hostname, timestamp, max_bytes)
        return Converted(message, bad_frame or bad_xml, error)
    text, bad = decode(payload)
    return Converted(text, bad, None)


class SyslogIntake:
    """Turns frames from any transport into events for the sender."""

    def __init__(self, sender: Sender, counters: Counters, ids: NetworkIds, max_bytes: int) -> None:
        self.sender = sender
        self.counters = counters
        self.ids = ids
        self.max_bytes = max_bytes
        self.rlog = RateLimitedLog(log)

    def make_event(self, frame: bytes, source: str, peer: str, strict: bool) -> Event | None:
        """The event for a frame, or None when it was rejected (counted and logged here)."""
        try:
            converted = convert_frame(frame, self.max_bytes, strict)
        except SyslogParseError as exc:
            self.counters.reject_new(source, "not_syslog")
            self.rlog.warning("not_syslog", "%s from %s: rejected a datagram that is not RFC 5424 syslog: %s",
                              source, peer, exc)
            return None
        except Exception:  # one bad frame must never stop a receiver
            self.counters.reject_new(source, "internal_error")
            log.exception("%s from %s: could not convert a frame", source, peer)
            return None
        if converted.decode_error:
            self.counters.note("decode_errors")
            self.rlog.warning("decode", "%s from %s: frame is not valid UTF-8; bytes replaced by U+FFFD", source, peer)
        if converted.atna_error:
            self.counters.note("atna_errors")
            self.rlog.warning("atna", "%s from %s: ATNA message did not parse (%s); it goes to the failure index",
                              source, peer, converted.atna_error)
        return Event(self.ids.next(source), converted.message, source)

    def oversize(self, source: str, peer: str, length: int | None) -> None:
        self.counters.reject_new(source, "oversize")
        self.rlog.warning("oversize", "%s from %s: rejected a message of %s bytes, above the %d-byte limit",
                          source, peer, length if length is not None else "more than that", self.max_bytes)

    # ------------------------------------------------------------ UDP

    async def serve_udp(self, host: str, port: int) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        intake = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
                if len(data) > intake.max_bytes:
                    intake.oversize("udp", peer, len(data))
                    return
                event = intake.make_event(data, "udp", peer, strict=True)
                if event is not None and not intake.sender.submit_nowait(event):
                    intake.rlog.warning("udp_full", "udp: queue full, rejected a datagram from %s", peer)

            def error_received(self, exc: Exception) -> None:
                log.warning("udp receive error: %s", exc)

        transport, _ = await loop.create_datagram_endpoint(Protocol, local_addr=(host, port))
        return transport  # type: ignore[return-value]

    # ------------------------------------------------------------ TCP / TLS

    async def serve_stream(self, host: str, port: int, source: str,
                           tls: ssl.SSLContext | None = None) -> StreamServer:
        server = StreamServer(self, source)
        server.server = await asyncio.start_server(server.handle, host, port, ssl=tls,
                                                   limit=READ_CHUNK, ssl_handshake_timeout=30 if tls else None)
        return server


class StreamServer(TrackedServer):
    """A TCP or TLS listener that knows its connections, so stopping closes them."""

    def __init__(self, intake: SyslogIntake, source: str) -> None:
        self.intake = intake
        self.source = source
        super().__init__()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.tracked():
            await self._handle(reader, writer)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("peername")
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        intake, source = self.intake, self.source

        def on_oversize(frame: OversizeFrame) -> None:
            intake.oversize(source, peer, frame.length)

        framer = OctetCountingFramer(max_frame_size=intake.max_bytes, on_oversize=on_oversize)
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                for frame in framer.feed(data):
                    await self._frame(frame, peer)
            try:
                for frame in framer.finish():
                    await self._frame(frame, peer)
            except SyslogParseError as exc:
                intake.counters.reject_new(source, "truncated_frame")
                intake.rlog.warning("truncated", "%s from %s: connection closed mid-frame: %s", source, peer, exc)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.info("%s connection from %s ended: %s", source, peer, exc)
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    async def _frame(self, frame: bytes, peer: str) -> None:
        event = self.intake.make_event(frame, self.source, peer, strict=False)
        if event is not None:
            await self.intake.sender.submit(event)


def tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """RFC 5425 server context: TLS 1.2 or newer; with client_ca, clients must present a certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.load_verify_locations(str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context
