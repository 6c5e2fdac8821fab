"""RFC 5424 syslog frames and TCP stream framing for the ATNA collector.

ATNA audit messages travel as RFC 5424 syslog (``<85>1 TIMESTAMP HOST APP PROCID
MSGID - BOM<xml>``): over UDP one datagram is one frame; over TCP/TLS (RFC 6587,
RFC 5425) frames are octet-counted (``LEN SP MSG``) or, from older senders,
newline-delimited. ``OctetCountingFramer`` cuts a stream into frames and
``parse_rfc5424`` splits one frame into its fields. Whether MSG is a valid
AuditMessage is the ATNA parser's business, not this module's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from pacsguard.core.errors import PacsguardError

log = logging.getLogger(__name__)

ATNA_MSGIDS = frozenset({"IHE+RFC-3881", "DICOM+RFC3881", "IHE+DICOM"})
"""MSGIDs under which senders put ATNA XML (IHE ITI TF-2a 3.20.7; DICOM PS3.15)."""

DEFAULT_MAX_FRAME = 8 * 1024 * 1024

UTF8_BOM = b"\xef\xbb\xbf"
NILVALUE = "-"

# RFC 5424 section 6 limits: (field name, maximum length).
_HEADER_FIELDS = (("TIMESTAMP", 64), ("HOSTNAME", 255), ("APP-NAME", 48), ("PROCID", 128), ("MSGID", 32))
_PRI = re.compile(rb"<(\d{1,3})>")
_VERSION = re.compile(rb"([1-9]\d{0,2}) ")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})", re.IGNORECASE)


class SyslogParseError(PacsguardError):
    """A frame or stream is not valid RFC 5424 / RFC 6587; the message says where."""


@dataclass(frozen=True)
class SyslogMessage:
    """One RFC 5424 message. NILVALUE ("-") fields are None; ``msg`` has no BOM."""

    pri: int
    facility: int
    severity: int
    version: int
    timestamp: str | None
    hostname: str | None
    app_name: str | None
    procid: str | None
    msgid: str | None
    structured_data: str | None
    msg: bytes

    @property
    def is_atna(self) -> bool:
        return self.msgid in ATNA_MSGIDS


def parse_rfc5424(frame: bytes) -> SyslogMessage:
    """Split one RFC 5424 frame into its fields; SyslogParseError names what is wrong."""
    if not frame:
        raise SyslogParseError("syslog frame is empty")
    pri, rest = _take_pri(bytes(frame))
    version, rest = _take_version(rest)
    header, rest = _take_header(rest)
    structured_data, rest = _take_structured_data(rest)
    timestamp, hostname, app_name, procid, msgid = header
    return SyslogMessage(
        pri=pri,
        facility=pri >> 3,
        severity=pri & 7,
        version=version,
        timestamp=timestamp,
        hostname=hostname,
        app_name=app_name,
        procid=procid,
        msgid=msgid,
        structured_data=structured_data,
        msg=_take_msg(rest),
    )


def _take_pri(frame: bytes) -> tuple[int, bytes]:
    match = _PRI.match(frame)
    if match is None:
        raise SyslogParseError(f"syslog frame does not start with <PRI>: {frame[:20]!r}")
    pri = int(match[1])
    if pri > 191:
        raise SyslogParseError(f"syslog PRI {pri} is out of range 0..191")
    return pri, frame[match.end() :]


def _take_version(rest: bytes) -> tuple[int, bytes]:
    match = _VERSION.match(rest)
    if match is None:
        # An RFC 3164 frame ("<13>Mar  5 12:52:31 host ...") fails here.
        raise SyslogParseError(f"not RFC 5424: no VERSION after <PRI> (got {rest[:20]!r})")
    return int(match[1]), rest[match.end() :]


def _take_header(rest: bytes) -> tuple[tuple[str | None, ...], bytes]:
    values: list[str | None] = []
    for name, limit in _HEADER_FIELDS:
        value, rest = _take_token(rest, name, limit)
        values.append(value)
    timestamp = values[0]
    if timestamp is not None and not _TIMESTAMP.fullmatch(timestamp):
        raise SyslogParseError(f"syslog TIMESTAMP {timestamp!r} is not RFC 3339")
    return tuple(values), rest


def _take_token(rest: bytes, name: str, limit: int) -> tuple[str | None, bytes]:
    token, space, remainder = rest.partition(b" ")
    if not space:
        raise SyslogParseError(f"syslog frame ends inside the header, before the space after {name}")
    if not token or len(token) > limit:
        raise SyslogParseError(f"syslog {name} must be 1..{limit} characters, got {len(token)}")
    if any(byte < 33 or byte > 126 for byte in token):
        raise SyslogParseError(f"syslog {name} {token[:40]!r} has characters outside printable US-ASCII")
    value = token.decode("ascii")
    return (None if value == NILVALUE else value), remainder


def _take_structured_data(rest: bytes) -> tuple[str | None, bytes]:
    if rest.startswith(b"-"):
        return None, rest[1:]
    if not rest.startswith(b"["):
        raise SyslogParseError(f"syslog STRUCTURED-DATA must be '-' or start with '[', got {rest[:20]!r}")
    end = 0
    while rest.startswith(b"[", end):
        end = _element_end(rest, end)
    return rest[:end].decode("utf-8", errors="replace"), rest[end:]


def _element_end(data: bytes, start: int) -> int:
    """Index just past the SD-ELEMENT at ``start``; quoted values may hold escaped ] and "."""
    quoted = False
    index = start + 1
    while index < len(data):
        byte = data[index]
        if quoted and byte == 0x5C:  # backslash: the next octet is escaped
            index += 2
            continue
        if byte == 0x22:  # double quote
            quoted = not quoted
        elif byte == 0x5D and not quoted:  # ]
            return index + 1
        index += 1
    raise SyslogParseError("syslog STRUCTURED-DATA element is not terminated by ']'")


def _take_msg(rest: bytes) -> bytes:
    if not rest:
        return b""
    if not rest.startswith(b" "):
        raise SyslogParseError(
            f"syslog frame needs a space between STRUCTURED-DATA and MSG, got {rest[:20]!r}"
        )
    return rest[1:].removeprefix(UTF8_BOM)


# --------------------------------------------------------------------------
# TCP stream framing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class OversizeFrame:
    """A frame dropped for exceeding the size limit, as reported to ``on_oversize``."""

    length: int | None  # declared octet count; None for a newline-delimited frame
    head: bytes  # its first bytes, enough for a failure record to say what it was


_LENGTH_PREFIX = re.compile(rb"(\d{1,10}) ")
_PARTIAL_PREFIX = re.compile(rb"\d{1,10}")
_HEAD_BYTES = 256


class OctetCountingFramer:
    """Incremental framer for one TCP stream of syslog frames.

    Each frame is framed on its own: a frame that starts with digits and a space
    is octet-counted (``LEN SP MSG``, RFC 6587 3.4.1 / RFC 5425), anything else
    ends at LF (a trailing CR is dropped). A frame over ``max_frame_size`` is
    skipped, not buffered, and reported to ``on_oversize`` (else logged); the
    framer then carries on with the next frame, so one bad sender frame does not
    cost the rest of the stream.
    """

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME,
        on_oversize: Callable[[OversizeFrame], None] | None = None,
    ) -> None:
        if max_frame_size < 1:
            raise ValueError("max_frame_size must be at least 1")
        self.max_frame_size = max_frame_size
        self.oversize_count = 0
        self._on_oversize = on_oversize
        self._buffer = bytearray()
        self._skip = 0  # octets still to discard of an oversize octet-counted frame
        self._skip_line = False  # discarding an oversize newline-delimited frame up to its LF

    @property
    def pending(self) -> int:
        """Octets buffered towards the next frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame they complete, in order."""
        self._buffer += data
        frames: list[bytes] = []
        while self._buffer:
            if self._discard():
                continue
            frame = self._next_frame()
            if frame is None:
                break
            if frame:
                frames.append(frame)
        return frames

    def finish(self) -> list[bytes]:
        """The stream ended: return a last LF-less frame, or raise if a frame was cut short."""
        rest = bytes(self._buffer)
        skipping = self._skip or self._skip_line
        self._buffer.clear()
        self._skip, self._skip_line = 0, False
        if not rest or skipping:  # an oversize frame was already reported
            return []
        prefix = _LENGTH_PREFIX.match(rest)
        if prefix is not None:
            got, want = len(rest) - prefix.end(), int(prefix[1])
            raise SyslogParseError(f"stream ended inside an octet-counted frame: got {got} of {want} octets")
        if _PARTIAL_PREFIX.fullmatch(rest):
            raise SyslogParseError(f"stream ended inside an octet-count prefix {rest!r}")
        line = rest[:-1] if rest.endswith(b"\r") else rest
        return [line] if line else []

    def _discard(self) -> bool:
        """Drop bytes of an oversize frame; True while that consumed something."""
        if self._skip:
            dropped = min(self._skip, len(self._buffer))
            del self._buffer[:dropped]
            self._skip -= dropped
            return True
        if self._skip_line:
            end = self._buffer.find(b"\n")
            del self._buffer[: len(self._buffer) if end < 0 else end + 1]
            self._skip_line = end < 0
            return True
        return False

    def _next_frame(self) -> bytes | None:
        """The next frame, b"" when progress was made without one, None when more bytes are needed."""
        prefix = _LENGTH_PREFIX.match(self._buffer)
        if prefix is not None:
            return self._octet_counted(int(prefix[1]), prefix.end())
        if _PARTIAL_PREFIX.fullmatch(self._buffer):
            return None  # digits so far: a length prefix may still be arriving
        return self._newline_delimited()

    def _octet_counted(self, length: int, start: int) -> bytes | None:
        if length > self.max_frame_size:
            self._report(OversizeFrame(length, bytes(self._buffer[start : start + _HEAD_BYTES])))
            del self._buffer[:start]
            self._skip = length
            return b""
        if len(self._buffer) - start < length:
            return None
        frame = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        return frame

    def _newline_delimited(self) -> bytes | None:
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > self.max_frame_size:
                self._report(OversizeFrame(None, bytes(self._buffer[:_HEAD_BYTES])))
                self._buffer.clear()
                self._skip_line = True
                return b""
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_frame_size:
            self._report(OversizeFrame(None, line[:_HEAD_BYTES]))
            return b""
        return line

    def _report(self, oversize: OversizeFrame) -> None:
        self.oversize_count += 1
        if self._on_oversize is not None:
            self._on_oversize(oversize)
        else:
            log.warning(
                "dropped a syslog frame over %d octets (declared length %s)",
                self.max_frame_size,
                oversize.length,
            )
