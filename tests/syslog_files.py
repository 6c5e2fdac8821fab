"""Files of syslog frames as rsyslog writes them, one frame a line, made from our own ATNA inputs
(pipelines/atna/_dev/test/pipeline/): the four layouts `pacsguard collect --syslog-file` reads."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

ATNA_INPUTS = Path(__file__).resolve().parents[1] / "pipelines" / "atna" / "_dev" / "test" / "pipeline"
LOGIN = "rfc3881-login.xml"
TRANSFER = "instances-transferred-to-requestor.xml"


def atna_xml(name: str, when: dt.datetime) -> str:
    """One of our ATNA inputs with its EventDateTime set to `when`."""
    text = (ATNA_INPUTS / name).read_text(encoding="utf-8")
    return re.sub(r'EventDateTime="[^"]*"', f'EventDateTime="{when.isoformat(timespec="milliseconds")}"', text)


def expected_action(name: str) -> str:
    expected = json.loads((ATNA_INPUTS / (name + "-expected.json")).read_text(encoding="utf-8"))["expected"][0]
    action: str = expected["doc"]["event"]["action"]
    return action


def rsyslog_escaped(xml: str) -> str:
    """rsyslog's default escaping of control characters in files: a newline is #012."""
    return xml.replace("\t", "#011").replace("\n", "#012")


def frames(when: dt.datetime) -> list[tuple[str, str, str]]:
    """(layout, ATNA input name, line) for each layout rsyslog writes: RFC 5424, RFC 3164 traditional, with <PRI>, RFC 3339 time."""
    stamp_5424 = when.isoformat(timespec="microseconds")
    stamp_3164 = f"{when:%b} {when.day:>2} {when:%H:%M:%S}"
    login, transfer = atna_xml(LOGIN, when), atna_xml(TRANSFER, when)
    return [
        ("rfc5424", LOGIN, f"<85>1 {stamp_5424} pacs1 dcm4chee-arc 1234 IHE+RFC-3881 - {rsyslog_escaped(login)}"),
        ("rfc3164", TRANSFER, f"{stamp_3164} pacs1 dcm4chee-arc[1234]: {rsyslog_escaped(transfer)}"),
        ("rfc3164-pri", LOGIN, f"<85>{stamp_3164} pacs2 audit: {' '.join(login.split())}"),
        ("rsyslog-fileformat", TRANSFER, f"{stamp_5424} pacs3 audit[77]: {rsyslog_escaped(transfer)}"),
    ]
