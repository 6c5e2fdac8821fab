"""Lines of syslog files (RFC 5424 / RFC 3164 as rsyslog writes them) through the collector's
file conversion: ATNA XML reaches the same parser as a network frame; other text stays text."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import syslog_files
from pacsguard.collector.syslog_input import convert_file_line

WHEN = dt.datetime(2026, 12, 1, 9, 5, 7, 250000, tzinfo=dt.timezone.utc)
LIMIT = 1024 * 1024


@pytest.mark.parametrize(("layout", "source", "line"), syslog_files.frames(WHEN),
                         ids=[f[0] for f in syslog_files.frames(WHEN)])
def test_every_layout_yields_the_parsed_atna_envelope(layout: str, source: str, line: str) -> None:
    converted = convert_file_line(line.encode(), LIMIT)
    assert converted.atna_error is None and not converted.decode_error
    envelope = json.loads(converted.message)
    assert envelope["pacsguard_format"] == "atna"
    doc = envelope["doc"]
    assert doc["event"]["action"] == syslog_files.expected_action(source)
    # the XML came through whole: its event time and participants were read
    assert str(doc["@timestamp"]).startswith("2026-12-01T09:05:07")
    assert "#012" not in json.dumps(doc)


def test_a_plain_3164_message_is_its_text() -> None:
    converted = convert_file_line(b"Dec  1 09:05:07 pacs1 sshd[42]: Accepted publickey for bob", LIMIT)
    assert converted.message == "Accepted publickey for bob" and converted.atna_error is None


def test_a_broken_atna_payload_is_kept_with_its_error() -> None:
    converted = convert_file_line(b"Dec  1 09:05:07 pacs1 audit: <?xml version='1.0'?><AuditMessage><Event", LIMIT)
    assert converted.atna_error
    assert json.loads(converted.message)["pacsguard_format"] == "atna"


def test_a_line_of_no_syslog_layout_is_sent_as_is() -> None:
    assert convert_file_line(b'{"a": 1}', LIMIT).message == '{"a": 1}'
