"""The collector's ATNA envelope, byte for byte, is what the parser before the streaming one gave
(issue 22): tests/atna_envelopes.json holds the sha256 of the signed envelope for 1,080 frames made
from our own inputs (tests/atna_variants.py: cuts, namespaces, CDATA, repeated and stray elements,
patient values with markup and non-ASCII, broken XML, DOCTYPE ...), written by that code.

The framer's fast search for an embedded frame start is checked against the regex it stands for."""

from __future__ import annotations

import json

import atna_variants
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pacsguard.parsers.syslog import _EMBEDDED_START, _embedded_start

EXPECTED: dict[str, str] = json.loads(atna_variants.EXPECTED.read_text(encoding="utf-8"))
FRAMES = atna_variants.frames()


def test_the_reference_covers_every_generated_frame() -> None:
    assert sorted(EXPECTED) == sorted(FRAMES)


def test_every_frame_gives_the_reference_envelope() -> None:
    differ = [name for name, frame in FRAMES.items() if atna_variants.envelope(frame) != EXPECTED[name]]
    assert not differ, f"{len(differ)} of {len(FRAMES)} envelopes changed, e.g. {differ[:5]}"


@pytest.mark.parametrize("name", ["instances-accessed-read.xml", "instances-accessed-read.xml cut@1328"])
def test_a_changed_envelope_is_seen(name: str) -> None:
    """The reference is sensitive: one byte more in the actor's name changes the envelope (one more in
    the patient's name does not: it never reaches the envelope)."""
    frame = FRAMES[name].replace(b"dr.okafor", b"dr.okaforX")
    assert atna_variants.envelope(FRAMES[name].replace(b"MORENO^LUCIA", b"MORENO^LUCIAX")) == EXPECTED[name]
    assert frame != FRAMES[name]
    assert atna_variants.envelope(frame) != EXPECTED[name]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"1", b"0", b"7", b"12345678901", b"987654321", b" <", b"<", b">", b"85", b"1 ",
                                  b" ", b"x", b"\n", b" <85>1 ", b"42 <13>1 ", b" <123>12 ", b"9 <191>10 "]), max_size=40).map(b"".join),
       st.integers(0, 130), st.integers(0, 130))
def test_fast_embedded_start_is_the_regex(data: bytes, pos: int, endpos: int) -> None:
    buffer = bytearray(data)
    want = _EMBEDDED_START.search(buffer, pos, endpos)
    got = _embedded_start(buffer, pos, endpos)
    assert (got and (got.span(), got[1])) == (want and (want.span(), want[1]))
