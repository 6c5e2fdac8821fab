"""ATNA frames for the envelope equivalence test (tests/unit/test_atna_equivalence.py), made from the
repository's own inputs (pipelines/atna/_dev/test/pipeline), never from ../shared.

Each own input as a syslog frame, cut at several points (partial parses and refusals), and with
seeded variations of what senders (and attackers) do: namespace prefixes, a default namespace,
single quotes, CDATA and comments in text, a child inside a text element, elements repeated
(the first counts) or nested where they do not belong, untyped objects, patient values with
markup characters or non-ASCII, the patient named in free text and in base64 details, junk
after the root, a bad byte, an undeclared entity, a missing time, another root.

    PYTHONPATH=installer python tests/atna_variants.py --write

writes tests/atna_envelopes.json: the sha256 of the signed envelope text the collector sends for
each frame under a fixed key. It was written by the code before the streaming
parser (issue 22) and is the reference the test holds today's code to; regenerate it only for a
change of behaviour that is meant, and say so in the commit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OWN = REPO / "pipelines" / "atna" / "_dev" / "test" / "pipeline"
EXPECTED = Path(__file__).resolve().parent / "atna_envelopes.json"
KEY = "5eed" * 16
MAX_BYTES = 1 << 20
HEADER = b"<85>1 2026-03-04T10:11:12.345+01:00 pacs01 dcm4chee-arc 4711 IHE+RFC-3881 - \xef\xbb\xbf"


def own_inputs() -> dict[str, bytes]:
    """name -> the AuditMessage bytes (the MSG of a .syslog input)."""
    out = {}
    for path in sorted(OWN.iterdir()):
        if path.suffix == ".xml":
            out[path.name] = path.read_bytes()
        elif path.suffix == ".syslog":
            out[path.name] = path.read_bytes().split(b"\xef\xbb\xbf", 1)[-1]
    return out


_TAG = re.compile(rb"<(/?)([A-Za-z][\w.-]*)")


def _prefixed(xml: bytes) -> bytes:
    xml = _TAG.sub(rb"<\1a:\2", xml)
    return xml.replace(b"<a:AuditMessage", b'<a:AuditMessage xmlns:a="urn:x"', 1)


def _default_ns(xml: bytes) -> bytes:
    return xml.replace(b"<AuditMessage", b'<AuditMessage xmlns="http://www.dcm4che.org/DICOM/audit"', 1)


def _single_quotes(xml: bytes) -> bytes:
    return re.sub(rb'="([^"\']*)"', rb"='\1'", xml)


def _cdata_and_comments(xml: bytes) -> bytes:
    xml = re.sub(rb"(<ParticipantObjectName>)([^<]*)(</)", rb"\1<!-- n --><![CDATA[\2]]>\3", xml)
    return re.sub(rb"(<EventOutcomeDescription>)([^<]*)", rb"\1 <!--x-->\2 ", xml)


def _child_in_text(xml: bytes) -> bytes:
    return re.sub(rb"(<ParticipantObjectName>)([^<]*)(</)", rb"\1\2<b>tail</b>after\3", xml)


def _repeated(xml: bytes) -> bytes:
    """A second EventIdentification / EventID / name / id type after the first: the first counts."""
    xml = re.sub(rb"(<EventID [^>]*/>)", rb'\1<EventID csd-code="110106"/>', xml, count=1)
    xml = re.sub(rb"(</EventIdentification>)", rb'\1<EventIdentification EventDateTime="2020-01-01T00:00:00Z">'
                 rb'<EventID csd-code="110100"/></EventIdentification>', xml, count=1)
    xml = re.sub(rb"(<ParticipantObjectName>[^<]*</ParticipantObjectName>)",
                 rb"\1<ParticipantObjectName>SECOND^NAME</ParticipantObjectName>", xml)
    return re.sub(rb"(<UserIDTypeCode [^>]*/>)", rb'\1<UserIDTypeCode csd-code="110150"/>', xml)


def _nested_elsewhere(xml: bytes) -> bytes:
    """Known names where they do not belong are not read."""
    stray = (b'<Extra><EventIdentification EventDateTime="2000-01-01T00:00:00Z"><EventID csd-code="110113"/>'
             b'</EventIdentification><ActiveParticipant UserID="stray" UserIsRequestor="true"/>'
             b'<ParticipantObjectIdentification ParticipantObjectID="STRAY-1" ParticipantObjectTypeCodeRole="1"/>'
             b"</Extra>")
    return xml.replace(b"</AuditMessage>", stray + b"</AuditMessage>", 1)


def _untyped(xml: bytes) -> bytes:
    return re.sub(rb"<ParticipantObjectIDTypeCode [^>]*/>", b"", xml)


def _rfc3881(xml: bytes) -> bytes:
    return xml.replace(b"csd-code=", b"code=").replace(b"originalText=", b"displayName=")


def _spaced_values(xml: bytes) -> bytes:
    return re.sub(rb'(UserID|ParticipantObjectID|NetworkAccessPointID)="([^"]*)"', rb'\1="  \2 "', xml)


def _self_closing_opened(xml: bytes) -> bytes:
    return re.sub(rb"<(EventID|RoleIDCode|ParticipantObjectIDTypeCode)( [^>]*)/>", rb"<\1\2>\n  </\1>", xml)


def _patient_values(rng: random.Random) -> Any:
    def apply(xml: bytes) -> bytes:
        pid = rng.choice(["A&amp;B-77^^^X", "Q'\"1234", "<none>", "ÆØÅ-4411", "12345", "MRN 9 9", "x"])
        name = rng.choice(["O&apos;NEIL^SEAN", "MÜLLER^JÖRG", "LI^NA", "DOE^JOHN=ドウ^ジョン", "A^B"])
        xml = re.sub(rb'(<ParticipantObjectIdentification ParticipantObjectID=")[^"]*("[^>]*Role="1")',
                     lambda m: m[1] + pid.encode() + m[2], xml)
        return re.sub(rb"(<ParticipantObjectName>)[^<]*(</)", lambda m: m[1] + name.encode() + m[2], xml)
    return apply


def _patient_in_free_text(xml: bytes) -> bytes:
    match = re.search(rb'ParticipantObjectID="([^"]*)"[^>]*Role="1"', xml)
    pid = match[1] if match else b"MRN-1"
    detail = base64.b64encode(b"Failed for " + pid + b" at QPD|x|y|" + pid)
    extra = (b'<ParticipantObjectDetail type="Alert Description" value="' + detail + b'"/>'
             b'<ParticipantObjectDetail type="ErrorReason" value="' + base64.b64encode(b"no " + pid) + b'"/>')
    xml = re.sub(rb"(<ParticipantObjectIdentification [^>]*>)", lambda m: m[1] + extra, xml, count=1)
    xml = re.sub(rb'EventOutcomeIndicator="0"', b'EventOutcomeIndicator="8"', xml, count=1)
    return xml.replace(b"</EventIdentification>", b"<EventOutcomeDescription>Patient[pk=1, id=[" + pid +
                       b"], name=X] " + pid + b" refused</EventOutcomeDescription></EventIdentification>", 1)


VARIATIONS = {
    "prefixed": _prefixed, "default-ns": _default_ns, "single-quotes": _single_quotes,
    "cdata-comments": _cdata_and_comments, "child-in-text": _child_in_text, "repeated": _repeated,
    "nested-elsewhere": _nested_elsewhere, "untyped": _untyped, "rfc3881": _rfc3881,
    "spaced-values": _spaced_values, "opened": _self_closing_opened, "free-text": _patient_in_free_text,
}
BREAKS = {
    "junk-after-root": lambda x: x + b"<AuditMessage/>",
    "bad-byte": lambda x: x.replace(b"</AuditMessage>", b"\xff</AuditMessage>", 1),
    "undeclared-entity": lambda x: x.replace(b"</ActiveParticipant>", b"&bogus;</ActiveParticipant>", 1),
    "no-time": lambda x: re.sub(rb'EventDateTime="[^"]*"', b"", x, count=1),
    "other-root": lambda x: x.replace(b"AuditMessage", b"AuditMessages"),
    "doctype": lambda x: b'<!DOCTYPE AuditMessage [<!ENTITY x "y">]>' + x.split(b"?>", 1)[-1],
}


def frames(seed: int = 22) -> dict[str, bytes]:
    """case name -> the syslog frame, in a fixed order."""
    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    for name, xml in own_inputs().items():
        out[name] = HEADER + xml
        out[f"{name} nil-header"] = b"<85>1 - - - - IHE+RFC-3881 - " + xml
        for cut in sorted({len(xml) * k // 9 for k in range(1, 9)} | {rng.randrange(1, len(xml))}):
            out[f"{name} cut@{cut}"] = HEADER + xml[:cut]
        for label, change in VARIATIONS.items():
            out[f"{name} {label}"] = HEADER + change(xml)
        for _ in range(3):
            labels = rng.sample(sorted(VARIATIONS), 3)
            varied = xml
            for label in labels:
                varied = VARIATIONS[label](varied)
            varied = _patient_values(rng)(varied)
            out[f"{name} {'+'.join(labels)}+patient"] = HEADER + varied
        label = rng.choice(sorted(BREAKS))
        out[f"{name} {label}"] = HEADER + BREAKS[label](xml)
    return out


def envelope(frame: bytes) -> str:
    """The sha256 of the text the collector sends for a frame (the signed envelope), under KEY."""
    from pacsguard.collector.atna_envelope import set_envelope_key
    from pacsguard.collector.syslog_input import convert_frame

    set_envelope_key(KEY)
    return hashlib.sha256(convert_frame(frame, MAX_BYTES, strict=False).message.encode("utf-8")).hexdigest()


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print(__doc__)
        return 2
    expected = {name: envelope(frame) for name, frame in frames().items()}
    EXPECTED.write_text(json.dumps(expected, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(expected)} envelopes to {EXPECTED}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
