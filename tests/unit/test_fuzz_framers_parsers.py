"""Fuzzing the framer and the parsers with Hypothesis (issue 9): a bounded number of cases, in CI.

Properties: no input crashes them with anything but their own error types;
well-formed octet-counted streams survive any chunking and any garbage between
frames costs only the garbage; memory stays bounded by the frame limit.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pacsguard.collector.atna_envelope import redact_patients
from pacsguard.collector.counters import Counters
from pacsguard.collector.http_input import HttpError, split_resources
from pacsguard.collector.syslog_input import convert_frame
from pacsguard.parsers.atna import AtnaParseError, parse_audit_message
from pacsguard.parsers.syslog import OctetCountingFramer, SyslogParseError, parse_rfc5424

CI = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX = 4096

messages = st.binary(min_size=1, max_size=300).map(lambda b: b"<85>1 - host app - - - " + b.replace(b"\n", b" "))


@CI
@given(st.binary(max_size=2000), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_framer_never_crashes_and_stays_bounded(data: bytes, chunks: list[int]) -> None:
    framer = OctetCountingFramer(max_frame_size=MAX)
    position = 0
    for size in chunks * (len(data) // max(sum(chunks), 1) + 1):
        for frame in framer.feed(data[position:position + size]):
            assert len(frame) <= MAX
        position += size
        assert framer.pending <= MAX + 64  # one frame and a prefix, never the stream
        if position >= len(data):
            break
    try:
        framer.finish()
    except SyslogParseError:
        pass


@CI
@given(st.lists(messages, min_size=1, max_size=8), st.integers(1, 50))
def test_octet_counted_frames_survive_any_chunking(frames: list[bytes], chunk: int) -> None:
    stream = b"".join(str(len(f)).encode() + b" " + f for f in frames)
    framer = OctetCountingFramer(max_frame_size=MAX)
    out: list[bytes] = []
    for start in range(0, len(stream), chunk):
        out += framer.feed(stream[start:start + chunk])
    assert out + framer.finish() == frames


@CI
@given(st.lists(messages, min_size=2, max_size=6), st.binary(min_size=1, max_size=40).filter(
    lambda g: b"<" not in g and not g[:1].isdigit() and not g[-1:].isdigit()))  # digits would join the count
def test_garbage_between_frames_costs_only_the_garbage(frames: list[bytes], garbage: bytes) -> None:
    octets = [str(len(f)).encode() + b" " + f for f in frames]
    stream = octets[0] + garbage + b"".join(octets[1:])
    framer = OctetCountingFramer(max_frame_size=MAX)
    out = framer.feed(stream) + framer.finish()
    # Every frame after the garbage survives whole; the first one may carry the garbage
    # (a count in characters cannot be told from a byte count followed by junk).
    assert all(f in out for f in frames[1:]) and any(o.startswith(frames[0]) for o in out)


@CI
@given(st.binary(max_size=600))
def test_syslog_parser_and_conversion_raise_only_their_errors(data: bytes) -> None:
    try:
        parse_rfc5424(data)
    except SyslogParseError:
        pass
    try:
        convert_frame(data, MAX, strict=True)
    except SyslogParseError:
        pass
    converted = convert_frame(data, MAX, strict=False)
    assert isinstance(converted.message, str)


xml_text = st.text(alphabet=st.sampled_from(list("<>/=\"' ?!-[]&;:xAuditMessagePtcipnObjID0123")), max_size=300)


@CI
@given(xml_text)
def test_atna_parser_and_redaction_never_crash(text: str) -> None:
    try:
        parse_audit_message(text, max_bytes=MAX)
    except AtnaParseError:
        pass
    assert isinstance(redact_patients(text), str)


@CI
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=30), st.sampled_from(["/fhir", "/fhir/AuditEvent"]))
def test_http_body_splitting_answers_every_body(value: object, path: str) -> None:
    body = json.dumps(value).encode()
    try:
        messages = split_resources(body, path, Counters())
        assert all(json.loads(m)["resourceType"] == "AuditEvent" for m in messages)
    except HttpError as exc:
        assert 400 <= exc.status < 500


def test_a_payload_ending_in_a_digit_before_the_next_count() -> None:
    """Found by the property above: a multi-byte payload ending in "0", then "24 <...", split so the
    read ends after "24". The byte count is right; the characters-count guess must not win."""
    frames = [b"<1>\x00\x00\xe1\x80\x80\x00\x00\x000", b"<2>the next frame, 24 byt"]
    stream = b"".join(str(len(f)).encode() + b" " + f for f in frames)
    for chunk in range(1, len(stream) + 1):
        framer = OctetCountingFramer(max_frame_size=MAX)
        out: list[bytes] = []
        for start in range(0, len(stream), chunk):
            out += framer.feed(stream[start:start + chunk])
        assert out + framer.finish() == frames, chunk
