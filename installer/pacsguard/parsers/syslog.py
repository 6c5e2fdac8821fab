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
# What an octet-counted frame's payload starts with: <PRI> (RFC 5424 / 3164), bare
# XML, or a JSON object some shippers frame the same way. Anything else after
# "digits space" is a text line that happens to start with a number.
_PAYLOAD_START = (b"<", b"{")
# Where a next octet-counted syslog frame starts inside bytes that should not
# hold one: "LEN SP <PRI>VERSION SP", not preceded by a digit. The framer cuts a
# frame there when its count reaches past it (a count larger than its payload)
# and resynchronises there after garbage or an absurd count.
_EMBEDDED_START = re.compile(rb"(?<![0-9])([1-9]\d{0,9}) <\d{1,3}>\d{1,2} ")
# Every match holds " <" and a digit, which the engine finds fast (a literal prefix); the whole
# pattern has no literal to skip ahead on, and scanning each byte of a frame with it cost more
# than the rest of the framer (issue 22). A match reaches at most 10 digits before its " <" and
# 9 bytes from it to its end.
_EMBEDDED_HINT = re.compile(rb" <\d")


def _embedded_start(buffer: bytearray, pos: int, endpos: int) -> re.Match[bytes] | None:
    """``_EMBEDDED_START.search(buffer, pos, endpos)``, tried only around each " <digit" in that range."""
    hint = _EMBEDDED_HINT.search(buffer, pos, endpos)
    while hint is not None:
        at = hint.start()
        match = _EMBEDDED_START.search(buffer, max(pos, at - 10), min(endpos, at + 9))
        if match is not None:
            return match
        hint = _EMBEDDED_HINT.search(buffer, at + 1, endpos)
    return None


# After an absurd count: the next octet-counted frame, or a syslog line after a LF.
_RESYNC = re.compile(rb"(?<![0-9])[1-9]\d{0,9} <\d{1,3}>\d{1,2} |(?<=\n)<\d{1,3}>\d{1,2} "
                     rb"|<\d{1,3}>1 (?:\d{4}-\d\d-\d\dT|- )")


@dataclass(frozen=True)
class FramingError:
    """An octet count that did not frame a message; the framer resynchronised."""

    kind: str  # count_too_large | count_in_characters | count_absurd | garbage
    detail: str


class OctetCountingFramer:
    """Incremental framer for one TCP stream of syslog frames, resynchronising on bad counts.

    Each frame is framed on its own: a frame that starts with ``digits SP`` and
    then ``<`` or ``{`` is octet-counted (``LEN SP MSG``, RFC 6587 3.4.1 / RFC
    5425); anything else ends at LF (a trailing CR is dropped), so a text line
    such as ``42 items exported`` stays one line.

    Counts are checked against what follows them, because a wrong count costs
    more than its own frame otherwise:
    - a count larger than its payload would swallow the frames after it: the
      frame is cut where the next ``LEN SP <PRI>VERSION SP`` starts;
    - a count in characters instead of bytes (non-ASCII payloads) ends inside
      the payload: when the bytes after it do not start a frame but the count
      read as characters does end at one, that is taken;
    - a count above ``max_frame_size`` is reported to ``on_oversize`` and the
      framer discards up to the next frame start or LF (it never skips the
      declared count blindly: 999999999 would eat the rest of the stream).
    Each correction is reported to ``on_framing_error``. Memory stays bounded
    by ``max_frame_size`` plus one read.
    """

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME,
        on_oversize: Callable[[OversizeFrame], None] | None = None,
        on_framing_error: Callable[[FramingError], None] | None = None,
    ) -> None:
        if max_frame_size < 1:
            raise ValueError("max_frame_size must be at least 1")
        self.max_frame_size = max_frame_size
        self.oversize_count = 0
        self.framing_errors = 0
        self._on_oversize = on_oversize
        self._on_framing_error = on_framing_error
        self._buffer = bytearray()
        self._resync = False  # discarding up to the next frame start (or LF, after an oversize line)
        self._resync_to_line = False

    @property
    def pending(self) -> int:
        """Octets buffered towards the next frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame they complete, in order."""
        self._buffer += data
        frames: list[bytes] = []
        while self._buffer:
            if self._resync and not self._discard():
                break
            frame = self._next_frame()
            if frame is None:
                break
            if frame:
                frames.append(frame)
        return frames

    def finish(self) -> list[bytes]:
        """The stream ended: return what is left as a last frame, or raise if only a count prefix is left."""
        frames: list[bytes] = []
        rest = bytes(self._buffer)
        self._buffer.clear()
        if self._resync:
            self._resync = False
            start = _RESYNC.search(rest)
            rest = rest[start.start():] if start and not self._resync_to_line else b""
            self._resync_to_line = False
            if rest and not self._resync_to_line:
                frames += self.feed(rest)
                rest = bytes(self._buffer)
                self._buffer.clear()
        if not rest:
            return frames
        prefix = _LENGTH_PREFIX.match(rest)
        if prefix is not None and rest[prefix.end():prefix.end() + 1] in (b"<", b"{"):
            got, want = len(rest) - prefix.end(), int(prefix[1])
            if got == 0:
                raise SyslogParseError(f"stream ended after an octet count of {want} with no message")
            # The sender closed: whatever it sent of this frame is all there is (a count too large).
            self._error("count_too_large", f"stream ended inside an octet-counted frame: got {got} of {want} octets")
            return frames + [rest[prefix.end():].rstrip(b"\r\n")]
        if _PARTIAL_PREFIX.fullmatch(rest):
            raise SyslogParseError(f"stream ended inside an octet-count prefix {rest!r}")
        line = rest[:-1] if rest.endswith(b"\r") else rest
        return frames + ([line] if line else [])

    # ------------------------------------------------------------ internals

    def _error(self, kind: str, detail: str) -> None:
        self.framing_errors += 1
        if self._on_framing_error is not None:
            self._on_framing_error(FramingError(kind, detail))
        else:
            log.warning("syslog framing: %s", detail)

    def _discard(self) -> bool:
        """Drop bytes up to the next frame start (or LF); True once in sync again."""
        if self._resync_to_line:
            newline = self._buffer.find(b"\n")
            found = newline + 1 if newline >= 0 else -1
        else:
            match = _RESYNC.search(self._buffer, 1)  # not the bad frame's own start
            found = match.start() if match else -1
        if found < 0:
            # Keep a short tail: a frame start may be split across reads.
            keep = 0 if self._resync_to_line else min(len(self._buffer), 24)
            del self._buffer[: len(self._buffer) - keep]
            return False
        del self._buffer[:found]
        self._resync = self._resync_to_line = False
        return True

    def _next_frame(self) -> bytes | None:
        """The next frame, b"" when progress was made without one, None when more bytes are needed."""
        prefix = _LENGTH_PREFIX.match(self._buffer)
        if prefix is not None:
            after = self._buffer[prefix.end():prefix.end() + 1]
            if not after:
                return None  # "digits space": the payload's first byte decides
            if bytes(after) in _PAYLOAD_START:
                return self._octet_counted(int(prefix[1]), prefix.end())
            return self._newline_delimited()
        if _PARTIAL_PREFIX.fullmatch(self._buffer):
            return None  # digits so far: a length prefix may still be arriving
        return self._newline_delimited()

    def _octet_counted(self, length: int, start: int) -> bytes | None:
        if length == 0 or length > self.max_frame_size:
            if length:
                self._report(OversizeFrame(length, bytes(self._buffer[start : start + _HEAD_BYTES])))
            self._error("count_absurd", f"octet count {length} (limit {self.max_frame_size}): resynchronising")
            del self._buffer[:start]
            self._resync = True
            return b""
        end = start + length
        # A frame start inside what the count claims: the count is too large.
        embedded = _embedded_start(self._buffer, start + 1, min(end, len(self._buffer)))
        if embedded is not None:
            frame = bytes(self._buffer[start : embedded.start()]).rstrip(b"\r\n")
            self._error("count_too_large", f"octet count {length} reaches past the next frame at +{embedded.start() - start}")
            del self._buffer[: embedded.start()]
            return frame
        if len(self._buffer) < end:
            return None
        if not self._starts_frame(end, at_count=True):
            chars = self._char_count_end(start, length)
            if chars is not None:
                self._error("count_in_characters", f"octet count {length} counts characters, not bytes")
                end = chars
        frame = bytes(self._buffer[start:end])
        del self._buffer[:end]
        return frame

    def _starts_frame(self, index: int, at_count: bool = False) -> bool:
        """Whether the bytes at ``index`` can begin a frame (or nothing follows yet).

        at_count: index is where the frame's own octet count ends, so the byte
        before it is payload and may well be a digit; elsewhere a count never
        starts inside another number.
        """
        rest = self._buffer[index : index + 16]
        if not rest or rest[:1] in (b"<", b"\n", b"\r", b"{"):
            return True
        digits = _PARTIAL_PREFIX.match(rest)
        if digits is None or (not at_count and index > 0 and self._buffer[index - 1 : index].isdigit()):
            return False
        after = rest[digits.end() : digits.end() + 2]
        return len(after) < 2 or (after[:1] == b" " and after[1:2] in (b"<", b"{"))

    def _char_count_end(self, start: int, length: int) -> int | None:
        """The end of ``length`` UTF-8 characters from ``start``, if that lands on a frame start."""
        window = bytes(self._buffer[start : start + 4 * length])
        text = window.decode("utf-8", errors="ignore")
        if len(text) < length:
            return None
        end = start + len(text[:length].encode("utf-8"))
        # only a frame start really seen there confirms the guess: not the end of what has arrived
        if end >= len(self._buffer) or end == start + length:
            return None
        return end if self._starts_frame(end) else None

    def _newline_delimited(self) -> bytes | None:
        end = self._buffer.find(b"\n")
        # A frame start before the LF: the line is garbage left by a desynchronised
        # sender; cut it there so the octet-counted frames after it survive.
        limit = end if end >= 0 else len(self._buffer)
        embedded = _embedded_start(self._buffer, 1, limit)
        if embedded is not None:
            line = bytes(self._buffer[: embedded.start()]).rstrip(b"\r\n ")
            self._error("garbage", f"{embedded.start()} bytes before a frame start were not a frame")
            del self._buffer[: embedded.start()]
            return line
        if end < 0:
            if len(self._buffer) > self.max_frame_size:
                self._report(OversizeFrame(None, bytes(self._buffer[:_HEAD_BYTES])))
                self._buffer.clear()
                self._resync = self._resync_to_line = True
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
