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
import os
import re
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsguard.collector.atna_envelope import atna_message, is_xml_payload
from pacsguard.collector.connections import TrackedServer, start_tls
from pacsguard.collector.counters import Counters
from pacsguard.collector.events import Event, NetworkIds, decode
from pacsguard.collector.limits import Gate, Limits, Ticket
from pacsguard.collector.ratelog import RateLimitedLog
from pacsguard.collector.sender import Sender
from pacsguard.parsers.syslog import (
    UTF8_BOM,
    FramingError,
    OctetCountingFramer,
    OversizeFrame,
    SyslogParseError,
    parse_rfc5424,
)

log = logging.getLogger("pacsguard.collector")
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


# A line of a file rsyslog (or syslog-ng) wrote in the traditional RFC 3164 layout, with or
# without the <PRI> it received: "[<PRI>]TIMESTAMP HOST TAG[PID]: MSG", TIMESTAMP either
# "Mmm dd hh:mm:ss" (RSYSLOG_TraditionalFileFormat) or RFC 3339 (RSYSLOG_FileFormat).
_RFC3164 = re.compile(
    rb"^(?:<\d{1,3}>)?"
    rb"(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))"
    rb" (?P<host>\S+) (?P<tag>[^\s:\[]{1,64}(?:\[[^\]\s]{0,32}\])?):? ?(?P<msg>.*)$", re.DOTALL)
# rsyslog writes control characters of a message as #ooo (octal) in files by default
# ($EscapeControlCharactersOnReceive): a multi-line XML payload arrives with #012 for each newline.
_RSYSLOG_ESCAPES = {b"#011": b"\t", b"#012": b"\n", b"#015": b"\r"}


def _unescape_rsyslog(payload: bytes) -> bytes:
    for escaped, char in _RSYSLOG_ESCAPES.items():
        payload = payload.replace(escaped, char)
    return payload


def convert_file_line(line: bytes, max_bytes: int) -> Converted:
    """One line of a file of syslog frames (RFC 5424 or RFC 3164, as rsyslog writes them) -> ``message``.

    The same conversion as a network frame (convert_frame: ATNA XML through the ATNA parser),
    after the file's own framing: the traditional header is read here, and rsyslog's #012
    escapes are undone in an XML payload. A line that is neither is sent as its text.
    """
    try:
        parse_rfc5424(line)
    except SyslogParseError:
        pass
    else:
        if b"#012" in line and (b"<AuditMessage" in line or b"<?xml" in line):
            line = _unescape_rsyslog(line)
        return convert_frame(line, max_bytes=max_bytes, strict=False)
    match = _RFC3164.match(line)
    if match is None:
        return convert_frame(line, max_bytes=max_bytes, strict=False)
    payload = match.group("msg").lstrip(b" \t").removeprefix(UTF8_BOM)
    if not is_xml_payload(payload):
        text, bad = decode(payload)
        return Converted(text, bad, None)
    payload = _unescape_rsyslog(payload)
    stamp = match.group("ts").decode("ascii")
    # "Dec  1 10:15:00" has no year and no zone: the ATNA message's own EventDateTime decides.
    timestamp = stamp if stamp[:1].isdigit() else None
    frame_text, bad_frame = decode(line)
    xml_text, bad_xml = decode(payload)
    message, error = atna_message(frame_text, xml_text, match.group("host").decode("utf-8", "replace"),
                                  timestamp, max_bytes)
    return Converted(message, bad_frame or bad_xml, error)


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

    async def serve_udp(self, host: str, port: int, rcvbuf: int = 8 * 1024 * 1024) -> UdpInput:
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
                    intake.rlog.warning("udp_full", "udp: journal full, rejected a datagram from %s", peer)

            def error_received(self, exc: Exception) -> None:
                log.warning("udp receive error: %s", exc)

        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
            effective = size_receive_buffer(sock, rcvbuf)
        except OSError:
            sock.close()
            raise
        if effective < rcvbuf:
            log.warning("udp %s:%d: receive buffer is %d bytes, not the %d asked for: raise the kernel's cap "
                        "(sysctl net.core.rmem_max=%d) or run with CAP_NET_ADMIN, else bursts are dropped by the "
                        "kernel (counted as udp_kernel_drops)", host, port, effective, rcvbuf, rcvbuf)
        transport, _ = await loop.create_datagram_endpoint(Protocol, sock=sock)
        return UdpInput(transport, sock, effective)  # type: ignore[arg-type]

    # ------------------------------------------------------------ TCP / TLS

    async def serve_stream(self, host: str, port: int, source: str,
                           tls: ssl.SSLContext | None = None, limits: Limits | None = None) -> StreamServer:
        server = StreamServer(self, source, limits or Limits(), tls)
        # Plain TCP at the listener: TLS starts only once the gate admitted the connection (limits.py).
        server.server = await asyncio.start_server(server.handle, host, port, limit=READ_CHUNK)
        return server


def size_receive_buffer(sock: socket.socket, wanted: int) -> int:
    """Ask for ``wanted`` bytes of receive buffer (forced past rmem_max where allowed); return what the kernel gave.

    Linux reports twice the size it was asked for (bookkeeping overhead): the
    value returned is what getsockopt says divided by two.
    """
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    try:
        if force is None:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, force, wanted)
    except (PermissionError, OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return got // 2 if sys.platform.startswith("linux") else got


def kernel_udp_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for this socket (receive buffer full), from /proc/net/udp{,6}.

    The last column of /proc/net/udp is the per-socket drop counter (the same
    count as SO_RXQ_OVFL, without needing recvmsg); the socket is found by its
    inode. None where /proc is not available.
    """
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:
        return None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table, encoding="ascii") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) >= 13 and fields[9] == inode:
                        return int(fields[-1])
        except OSError:
            continue
    return None


@dataclass
class UdpInput:
    transport: asyncio.DatagramTransport
    sock: socket.socket
    receive_buffer: int
    baseline: int = 0

    def drops(self) -> int:
        """The kernel's count for this socket; the last one read once the socket is closed."""
        if self.sock.fileno() >= 0:
            value = kernel_udp_drops(self.sock)
            if value is not None:
                self.baseline = max(self.baseline, value)
        return self.baseline

    def close(self) -> None:
        self.transport.close()


class StreamServer(TrackedServer):
    """A TCP or TLS listener that knows its connections, so stopping closes them."""

    def __init__(self, intake: SyslogIntake, source: str, limits: Limits, tls: ssl.SSLContext | None = None) -> None:
        self.intake = intake
        self.source = source
        self.gate = Gate(limits)
        self.tls = tls
        self._port = 0
        super().__init__()

    @property
    def port(self) -> int:
        if not self._port and self.server is not None and self.server.sockets:
            self._port = int(self.server.sockets[0].getsockname()[1])
        return self._port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The PROXY header (from a balancer) precedes the TLS handshake: read on TCP only (connections.py).
        ticket, peer = await self.admit(self.gate, reader, writer, proxy_header=self.tls is None)
        if isinstance(ticket, str):
            self.intake.rlog.warning(ticket, "%s: refused a connection from %s (%s)", self.source, peer, ticket)
            writer.close()
            return
        try:
            with self.tracked():
                if self.tls is not None and not await start_tls(writer, reader, self.tls,
                                                                self.gate.limits.handshake_timeout):
                    self.gate.refuse("tls_handshake")
                    writer.close()
                    return
                await self._handle(reader, writer, ticket, peer)
        except asyncio.CancelledError:
            writer.close()  # evicted (a silent connection of the busiest address) or shutting down
        finally:
            self.gate.leave(ticket)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ticket: Ticket,
                      peer: str) -> None:
        intake, source, limits = self.intake, self.source, self.gate.limits

        def on_oversize(frame: OversizeFrame) -> None:
            intake.oversize(source, peer, frame.length)

        def on_framing_error(error: FramingError) -> None:
            intake.counters.note("framing_errors")
            intake.rlog.warning("framing", "%s from %s: %s", source, peer, error.detail)

        framer = OctetCountingFramer(max_frame_size=intake.max_bytes, on_oversize=on_oversize,
                                     on_framing_error=on_framing_error)
        loop = asyncio.get_running_loop()
        held = 0  # bytes of the gate's budget this connection holds (its partial frame)
        frame_started: float | None = None
        try:
            while True:
                timeout = limits.idle_timeout
                if frame_started is not None:
                    timeout = min(timeout, max(0.0, frame_started + limits.request_timeout - loop.time()))
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
                except asyncio.TimeoutError:
                    if frame_started is not None:  # no complete event arrived: a connection fact, not an event
                        self.gate.refuse("frame_timeout")
                        framer = OctetCountingFramer(max_frame_size=intake.max_bytes)  # drop the partial frame
                    log.info("%s connection from %s closed: %s", source, peer,
                             "partial frame not completed in time" if frame_started is not None else "idle")
                    break
                except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                    # A TLS peer that closes without close_notify lands here; what it sent before is
                    # already in the framer and is delivered below, not dropped (issue 9, item 4).
                    log.info("%s connection from %s ended: %s", source, peer, exc)
                    leftover = bytes(getattr(reader, "_buffer", b""))  # read() raises before returning these
                    if leftover:
                        await self._frames(framer.feed(leftover), peer)
                    break
                if not data:
                    break
                ticket.touch()
                frames = framer.feed(data)
                if frames:
                    ticket.busy = True
                    await self._frames(frames, peer)
                    ticket.busy = False
                pending = framer.pending
                if pending != held:
                    if pending > held and not self.gate.reserve(pending - held):
                        self.gate.refuse("buffer_budget")
                        intake.rlog.warning("budget", "%s from %s: the input's buffer budget (%d bytes) is spent: "
                                            "closing the connection", source, peer, limits.max_buffered_bytes)
                        framer = OctetCountingFramer(max_frame_size=intake.max_bytes)  # drop the partial frame
                        break
                    if pending < held:
                        self.gate.release(held - pending)
                    held = pending
                frame_started = (frame_started or loop.time()) if pending else None
            try:
                await self._frames(framer.finish(), peer)
            except SyslogParseError as exc:  # an incomplete frame is not an event: counted on the input
                self.gate.refuse("truncated_frame")
                intake.rlog.warning("truncated", "%s from %s: connection closed mid-frame: %s", source, peer, exc)
        except asyncio.CancelledError:
            pass
        finally:
            self.gate.release(held)
            writer.close()

    async def _frames(self, frames: list[bytes], peer: str) -> None:
        """Journal the frames of one read before reading on (a kill -9 after this loses none of them)."""
        events = [e for e in (self.intake.make_event(f, self.source, peer, strict=False) for f in frames) if e]
        if events:
            await self.intake.sender.submit_many(events)


def tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """RFC 5425 server context: TLS 1.2 or newer; with client_ca, clients must present a certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    # A sender that closes without close_notify (many syslog clients do) must not cost the
    # frames it sent: treat that EOF as an ordinary end of stream. A frame cut short by it is
    # still seen by the framer (issue 9, item 4).
    context.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    if client_ca is not None:
        context.load_verify_locations(str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context
