"""RFC 5424 frame parsing and TCP stream framing (octet-counting and newline-delimited), on the
repository's own frames (pipelines/atna/_dev/test/pipeline/*.syslog) and, where present, the
public corpus (skipped, with the reason, without it)."""

from __future__ import annotations

import re
from pathlib import Path

import corpus
import pytest
from pacsguard.core.errors import PacsguardError
from pacsguard.parsers.syslog import (
    ATNA_MSGIDS,
    FramingError,
    OctetCountingFramer,
    OversizeFrame,
    SyslogParseError,
    parse_rfc5424,
)

SAMPLES = corpus.folder("dicom-audit")
needs_samples = corpus.needs("dicom-audit")
OWN = Path(__file__).resolve().parents[2] / "pipelines" / "atna" / "_dev" / "test" / "pipeline"

OWN_FRAMES = {
    # file: (pri, hostname, app_name, procid, msgid, timestamp, MSG starts with)
    "syslog-ihe-rfc3881-pix-query.syslog": (
        85, "mpi01.north.example", "north-mpi", "2211", "IHE+RFC-3881", "2026-03-03T08:30:12.401+02:00",
        b'<?xml version="1.0" encoding="UTF-8"?><AuditMessage>'),
    # MSG after a UTF-8 BOM, which the parser strips
    "syslog-ihe-dicom-login-failure.syslog": (
        85, "viewer01.north.example", "viewer", "4410", "IHE+DICOM", "2026-03-03T08:31:00.002+02:00",
        b'<?xml version="1.0" encoding="UTF-8"?>\n<AuditMessage>'),
    "syslog-dicom-rfc3881-login.syslog": (
        86, "viewer01.north.example", "viewer", "4410", "DICOM+RFC3881", "2026-03-03T08:32:00.000+02:00",
        b'<?xml version="1.0" encoding="UTF-8"?>\n<AuditMessage>'),
}
OWN_BAD_PAYLOADS = {
    "syslog-payload-not-xml.syslog": b"audit buffer flushed?>",
    "syslog-payload-other-root.syslog": b'<Heartbeat seq="12"/>trailing?>',
}

VALID_FRAMES = {
    # file: (hostname, app_name, procid, msgid, timestamp)
    "openhim-core-js-testAuditIHEDICOM-login.syslog": (
        "cabig-h1",
        "OHT",
        "521",
        "IHE+DICOM",
        "2013-10-17T15:12:04.287-06:00",
    ),
    "openhim-core-js-testAuditIHERFC3881-login.syslog": (
        "cabig-h1",
        "OHT",
        "521",
        "IHE+RFC-3881",
        "2010-12-17T15:12:04.287-06:00",
    ),
    "openhim-core-js-testAuditMessage-pix-query.syslog": (
        "Hanness-MBP.jembi.local",
        "java",
        "9293",
        "IHE+RFC-3881",
        "2015-03-05T12:52:31.358+02:00",
    ),
}
INVALID_PAYLOAD_FRAMES = {
    "openhim-core-js-invalid-non-xml-msg.syslog": b"this is a message?>",
    "openhim-core-js-invalid-unexpected-xml-msg.syslog": b"<data>data</data>?>",
}

FRAME = b"<85>1 2015-03-05T12:52:31.358+02:00 host app 9293 IHE+RFC-3881 - <AuditMessage/>"


def test_atna_msgids() -> None:
    assert ATNA_MSGIDS == {"IHE+RFC-3881", "DICOM+RFC3881", "IHE+DICOM"}


@pytest.mark.parametrize("name", sorted(OWN_FRAMES))
def test_own_frames(name: str) -> None:
    pri, hostname, app_name, procid, msgid, timestamp, start = OWN_FRAMES[name]
    message = parse_rfc5424((OWN / name).read_bytes())
    assert (message.pri, message.version) == (pri, 1)
    assert (message.facility, message.severity) == (pri // 8, pri % 8)
    assert (message.hostname, message.app_name, message.procid, message.msgid) == (hostname, app_name, procid, msgid)
    assert message.timestamp == timestamp
    assert message.structured_data is None
    assert message.msg.startswith(start)
    assert message.msg.rstrip(b"\n").endswith(b"</AuditMessage>")
    assert message.is_atna


@pytest.mark.parametrize("name", sorted(OWN_BAD_PAYLOADS))
def test_own_frames_with_a_bad_payload_are_valid_syslog(name: str) -> None:
    message = parse_rfc5424((OWN / name).read_bytes())
    assert message.msgid == "IHE+RFC-3881"
    assert message.msg == OWN_BAD_PAYLOADS[name]


@needs_samples
@pytest.mark.parametrize("name", sorted(VALID_FRAMES))
def test_sample_frames(name: str) -> None:
    hostname, app_name, procid, msgid, timestamp = VALID_FRAMES[name]
    message = parse_rfc5424((SAMPLES / name).read_bytes())
    assert (message.pri, message.facility, message.severity, message.version) == (85, 10, 5, 1)
    assert (message.hostname, message.app_name, message.procid, message.msgid) == (
        hostname,
        app_name,
        procid,
        msgid,
    )
    assert message.timestamp == timestamp
    assert message.structured_data is None
    assert message.msg.startswith(b'<?xml version="1.0" encoding="UTF-8"')
    assert message.msg.endswith(b"</AuditMessage>")
    assert message.is_atna


@needs_samples
@pytest.mark.parametrize("name", sorted(INVALID_PAYLOAD_FRAMES))
def test_openhim_invalid_frames_are_valid_syslog_with_a_bad_payload(name: str) -> None:
    """OpenHIM's own test validates their syslog part; only MSG is bad (the ATNA parser refuses it)."""
    message = parse_rfc5424((SAMPLES / name).read_bytes())
    assert message.msgid == "IHE+RFC-3881"
    assert message.msg == INVALID_PAYLOAD_FRAMES[name]


def test_bom_is_stripped_and_nil_fields_are_none() -> None:
    message = parse_rfc5424(b"<14>1 - - - - - - \xef\xbb\xbf<AuditMessage/>")
    assert message.msg == b"<AuditMessage/>"
    assert (message.timestamp, message.hostname, message.app_name, message.procid, message.msgid) == (
        None,
    ) * 5
    assert not message.is_atna
    assert (message.facility, message.severity) == (1, 6)


def test_structured_data_is_kept_raw_with_escapes() -> None:
    frame = b'<165>1 2003-10-11T22:14:15.003Z host app - ID47 [a@1 x="q\\"]\\\\" y="]"][b@2] \xef\xbb\xbfmsg'
    message = parse_rfc5424(frame)
    assert message.structured_data == '[a@1 x="q\\"]\\\\" y="]"][b@2]'
    assert message.msg == b"msg"


def test_frame_without_msg() -> None:
    assert parse_rfc5424(b"<85>1 2024-01-01T00:00:00Z h a p m -").msg == b""


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (b"", "frame is empty"),
        (b"hello", "does not start with <PRI>"),
        (b"<>1 - - - - - -", "does not start with <PRI>"),
        (b"<999>1 - - - - - -", "PRI 999 is out of range"),
        (b"<85>Mar  5 12:52:31 host java: msg", "not RFC 5424: no VERSION"),
        (b"<85>0 - - - - - -", "not RFC 5424: no VERSION"),
        (b"<85>1", "not RFC 5424: no VERSION"),
        (
            b"<85>1 2015-03-05T12:52:31.358+02:00 host",
            "ends inside the header, before the space after HOSTNAME",
        ),
        (b"<85>1 2015-03-05T12:52:31.358+02:00 host java 9293 IHE+RFC-3881", "before the space after MSGID"),
        (b"<85>1 05/03/2015 host java 9293 IHE+RFC-3881 - x", "TIMESTAMP '05/03/2015' is not RFC 3339"),
        (b"<85>1 - h\xc3\xa9 app - - -", "HOSTNAME b'h\\xc3\\xa9' has characters outside printable US-ASCII"),
        (b"<85>1 - host " + b"a" * 49 + b" - - -", "APP-NAME must be 1..48 characters, got 49"),
        (b"<85>1 - host  - - -", "APP-NAME must be 1..48 characters, got 0"),
        (b"<85>1 - host app - - x", "STRUCTURED-DATA must be '-' or start with '['"),
        (b'<85>1 - host app - - [id@1 a="b]', "STRUCTURED-DATA element is not terminated"),
        (b"<85>1 - host app - - -<AuditMessage/>", "needs a space between STRUCTURED-DATA and MSG"),
    ],
)
def test_malformed_frames_name_the_problem(frame: bytes, problem: str) -> None:
    with pytest.raises(SyslogParseError, match=re.escape(problem)):
        parse_rfc5424(frame)


def test_errors_are_pacsguard_errors() -> None:
    assert issubclass(SyslogParseError, PacsguardError)


# -- framer ------------------------------------------------------------------------------


def octet(frame: bytes) -> bytes:
    return str(len(frame)).encode() + b" " + frame


def feed_in_chunks(framer: OctetCountingFramer, stream: bytes, size: int) -> list[bytes]:
    frames: list[bytes] = []
    for start in range(0, len(stream), size):
        frames += framer.feed(stream[start : start + size])
    return frames + framer.finish()


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 10_000])
def test_octet_counted_frames_survive_any_chunking(chunk: int) -> None:
    frames = [FRAME, FRAME.replace(b"host", b"other"), b"<85>1 - - - - - - line1\nline2"]
    stream = b"".join(octet(f) for f in frames)
    assert feed_in_chunks(OctetCountingFramer(), stream, chunk) == frames


@pytest.mark.parametrize("chunk", [1, 5, 10_000])
def test_newline_delimited_frames(chunk: int) -> None:
    stream = FRAME + b"\n" + FRAME + b"\r\n\n" + FRAME  # CRLF dropped, empty line skipped, last frame at EOF
    assert feed_in_chunks(OctetCountingFramer(), stream, chunk) == [FRAME] * 3


def test_framing_is_detected_per_frame() -> None:
    framer = OctetCountingFramer()
    # "digits space" counts octets only when a message (<PRI>, XML or JSON) follows:
    # a text line that starts with a number stays one line (issue 9, item 3).
    stream = octet(FRAME) + FRAME + b"\n" + octet(b"12 starts with digits") + b"123abc\n"
    assert framer.feed(stream) == [FRAME, FRAME, b"21 12 starts with digits123abc"]
    assert framer.pending == 0


def test_own_frames_through_the_framer() -> None:
    frames = [(OWN / name).read_bytes() for name in sorted(OWN_FRAMES)]
    assert sum(b"\n" in f.rstrip(b"\n") for f in frames) == 2  # multi-line XML: only octet counting carries it whole
    framer = OctetCountingFramer()
    assert feed_in_chunks(framer, b"".join(octet(f) for f in frames), 100) == frames
    assert [parse_rfc5424(f).msgid for f in frames] == ["DICOM+RFC3881", "IHE+DICOM", "IHE+RFC-3881"]


@needs_samples
def test_sample_frames_through_the_framer() -> None:
    frames = [(SAMPLES / name).read_bytes() for name in sorted(VALID_FRAMES)]
    assert all(b"\n" in f for f in frames)  # multi-line XML: only octet counting carries them whole
    framer = OctetCountingFramer()
    assert feed_in_chunks(framer, b"".join(octet(f) for f in frames), 100) == frames
    assert [parse_rfc5424(f).msgid for f in frames] == ["IHE+DICOM", "IHE+RFC-3881", "IHE+RFC-3881"]


def test_partial_frame_waits_for_more_bytes() -> None:
    framer = OctetCountingFramer()
    data = octet(FRAME)
    assert framer.feed(data[:2]) == []  # part of the length prefix
    assert framer.feed(data[2:-1]) == []  # all but the last octet
    assert framer.pending == len(data) - 1
    assert framer.feed(data[-1:]) == [FRAME]


def test_truncated_octet_frame_at_end_of_stream() -> None:
    # What the sender sent of a cut frame is delivered (the failure index keeps it), with a framing error.
    errors: list[FramingError] = []
    framer = OctetCountingFramer(on_framing_error=errors.append)
    assert framer.feed(octet(FRAME)[:-10]) == []
    assert framer.finish() == [FRAME[:-10]]
    assert [e.detail for e in errors] == [(f"stream ended inside an octet-counted frame: got {len(FRAME) - 10} of "
                                           f"{len(FRAME)} octets")]
    assert framer.pending == 0  # reusable after the error
    assert framer.feed(octet(FRAME)) == [FRAME]


def test_truncated_length_prefix_at_end_of_stream() -> None:
    framer = OctetCountingFramer()
    assert framer.feed(b"123") == []
    with pytest.raises(SyslogParseError, match="inside an octet-count prefix"):
        framer.finish()


def test_oversize_octet_frame_is_reported_and_skipped_without_losing_sync() -> None:
    reports: list[OversizeFrame] = []
    framer = OctetCountingFramer(max_frame_size=100, on_oversize=reports.append)
    big = b"<85>1 - - - - - " + b"x" * 500
    stream = octet(FRAME[:90]) + octet(big) + octet(FRAME[:90])
    assert feed_in_chunks(framer, stream, 33) == [FRAME[:90], FRAME[:90]]
    assert framer.oversize_count == 1
    assert [r.length for r in reports] == [len(big)]
    assert (
        big.startswith(reports[0].head) and reports[0].head
    )  # what had arrived of it, for the failure record


def test_oversize_line_is_reported_and_sync_regained_at_next_newline() -> None:
    reports: list[OversizeFrame] = []
    framer = OctetCountingFramer(max_frame_size=50, on_oversize=reports.append)
    stream = b"<85>1 " + b"y" * 200 + b"\n" + FRAME[:40] + b"\n"
    assert feed_in_chunks(framer, stream, 16) == [FRAME[:40]]
    assert [r.length for r in reports] == [None]
    assert reports[0].head.startswith(b"<85>1 yyy")


def test_oversize_line_in_one_chunk() -> None:
    framer = OctetCountingFramer(max_frame_size=10)
    assert framer.feed(b"x" * 20 + b"\nshort\n") == [b"short"]
    assert framer.oversize_count == 1  # reported through the log when no callback is given


def test_max_frame_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        OctetCountingFramer(max_frame_size=0)
