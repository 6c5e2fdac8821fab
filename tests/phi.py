"""Patient data in an ATNA message, found independently of the code under test (ElementTree),
so tests can check that none of it reaches what is stored."""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET


def patient_terms(text: str) -> set[str]:
    """Patient ids and names (and their XML-escaped forms) of the patient objects in `text`."""
    start = text.find("<")
    body = text[text.find("<AuditMessage") if "<AuditMessage" in text else start:]
    try:
        root = ET.fromstring(body.encode())
    except ET.ParseError:
        return set()
    terms: set[str] = set()
    for obj in root.iter():
        if not obj.tag.endswith("ParticipantObjectIdentification"):
            continue
        codes = [c.get("csd-code") or c.get("code") for c in obj if c.tag.endswith("ParticipantObjectIDTypeCode")]
        if "2" in codes or obj.get("ParticipantObjectTypeCodeRole") == "1":
            if obj.get("ParticipantObjectID") not in (None, "", "<none>"):
                value = obj.get("ParticipantObjectID", "")
                terms |= {value, html.escape(value)}
            for name in obj:
                if name.tag.endswith("ParticipantObjectName") and name.text:
                    terms |= {name.text, html.escape(name.text)}
    return terms
