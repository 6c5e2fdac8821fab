"""ATNA XML -> the JSON envelope pipelines/atna/pipeline.yaml finishes, with patient data redacted.

OpenSearch has no XML processor, so the collector parses the AuditMessage
(pacsguard.parsers.atna) and sends, as JSON text in ``message``:

    {"pacsguard_format": "atna", "original": <raw frame, patients redacted>, "doc": <normalized event>}

``original`` becomes event.original, which is stored as is: every patient id
and name found in a patient ParticipantObjectIdentification (ID type code 2
"Patient Number", or object role 1 "Patient") is replaced by
"[patient-redacted]" wherever it occurs in the frame, and base64 query/detail
values that carry them (or HL7 patient segments) and patient ids in REST paths
(``/patients/<id>``) are replaced too. The redaction
works on the text with regular expressions, not on a parse tree, so it also
covers frames whose XML is broken.

A frame whose XML breaks part of the way (cut short, a bad byte after the event
was described) is a partial parse: the envelope carries the event read up to the
fault and ``partial`` (the problem), and the event is indexed, tagged
``pacsguard-partial``. A frame with nothing usable (no AuditMessage, no EventID,
no time) is not dropped either: it is sent as an envelope with an ``error`` and
no ``doc``; the atna pipeline refuses it and the router keeps it in the failure
index with its original.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import html
import json
import logging
import re
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from pacsguard.parsers.atna import AtnaParseError, alternation, read_audit_message, terms_pattern

log = logging.getLogger("pacsguard.collector")

PATIENT_REDACTED = "[patient-redacted]"
# pipelines/router/pipeline.yaml detect_format: event.original above this goes to the failure index.
ROUTER_MAX_CHARS = 1_048_576

_XML_START = re.compile(rb"^(?:<\?xml|<(?:[\w.-]+:)?AuditMessage\b)")


def _content_and_end(name: str) -> tuple[str, str]:
    """Patterns for an element's content and for what follows it: its end tag, or the end of a frame
    cut inside it. The content is what ``.*?`` (DOTALL) before that matches, unrolled so that the
    engine runs over the text between tags instead of trying the end tag at every character (issue 22)."""
    end = rf"</(?:[\w.-]+:)?{name}\s*>"
    return rf"[^<]*(?:(?!{end})<[^<]*)*", rf"{end}|\Z"


def _element(name: str) -> re.Pattern[str]:
    """(start tag)(content)(end tag, or nothing at the end of a frame cut inside it)"""
    content, end = _content_and_end(name)
    return re.compile(rf"(<(?:[\w.-]+:)?{name}\b[^>]*>)({content})({end})")


# An object up to its end tag, or to the end of a frame cut inside it (even inside its start tag).
# A self-closing object is a block of its own (else it would run on into the next object).
_OBJECT_BLOCK = re.compile(
    r"<(?:[\w.-]+:)?ParticipantObjectIdentification\b(?:[^>]*/>"
    r"|[^>]*>{}(?:{})|[^>]*\Z)".format(*_content_and_end("ParticipantObjectIdentification")))
_MARKUP = re.compile(r"<!\[CDATA\[|\]\]>|<!--.*?-->", re.DOTALL)
_OBJECT_END = re.compile(r"</(?:[\w.-]+:)?ParticipantObjectIdentification\s*>\Z")
_IDTYPE_ELEMENT = re.compile(r"<(?:[\w.-]+:)?ParticipantObjectIDTypeCode\b[^>]*>")
_START_TAG = re.compile(r"^<[^>]*>", re.DOTALL)
_ROLE_PATIENT = re.compile(r"""\bParticipantObjectTypeCodeRole\s*=\s*["']1["']""")
# The parser's rule (parsers/atna.py _Object.is_patient): ID type 1, 2 or 5, or named so ...
_IDTYPE_PATIENT = re.compile(
    r"""<(?:[\w.-]+:)?ParticipantObjectIDTypeCode\b[^>]*\b(?:(?:csd-)?code\s*=\s*["'][125]["']"""
    r"""|(?:originalText|displayName)\s*=\s*["'](?:patient number|patient id|medical record number)["'])""",
    re.IGNORECASE)
# ... or no ID type code at all and an id that is not a DICOM UID.
_IDTYPE_CODED = re.compile(r"""<(?:[\w.-]+:)?ParticipantObjectIDTypeCode\b[^>]*\b(?:csd-)?code\s*=""")
_UID_ID = re.compile(r"""\bParticipantObjectID\s*=\s*["'][0-9]+(?:\.[0-9]+)+["']""")
# Each value also up to the end of a frame cut inside it (group 4 / 3 is then empty).
_OBJECT_ID = re.compile(r"""(\bParticipantObjectID\s*=\s*)(["'])(.*?)(\2|\Z)""", re.DOTALL)
# (Element content up to its end tag, CDATA sections and comments included.)
_OBJECT_NAME = _element("ParticipantObjectName")
_QUERY = _element("ParticipantObjectQuery")
# (The value runs to its closing quote, as ``.*?`` before it would: the lookbehind tells which quote.)
_DETAIL_VALUE = re.compile(
    r"""(<(?:[\w.-]+:)?ParticipantObjectDetail\b[^>]*?\bvalue\s*=\s*)(["'])((?<=")[^"]*|[^']*)(\2|\Z)""")
# REST paths name patients by id: dcm4chee's .../rs/patients/<id> (a new id in an
# "identifier changed" event is not in that message's patient object).
_URI_PATIENT = re.compile(r"""(/patients/)([^/"'?#\s<&]+)""", re.IGNORECASE)
# A frame without its end tag was cut: the patient objects it would have named may be lost, so
# free text and encoded values that could name them (unknown terms) are redacted whole.
_MESSAGE_END = re.compile(r"</(?:[\w.-]+:)?AuditMessage\s*>")
_DESCRIPTION = _element("EventOutcomeDescription")
# HL7 v2 segments that name a patient (PID, merge, PIX/PDQ query, next of kin).
_HL7_PATIENT_SEGMENT = re.compile(r"(?:^|[\r\n])(?:PID|MRG|QPD|NK1|PD1)\|")


def is_xml_payload(payload: bytes) -> bool:
    return bool(_XML_START.match(payload.lstrip(b" \t\r\n\xef\xbb\xbf")[:200]))


# ------------------------------------------------------------------ redaction


def _is_patient_block(block: str) -> bool:
    start = _START_TAG.match(block)
    if (start and _ROLE_PATIENT.search(start.group(0))) or _IDTYPE_PATIENT.search(block):
        return True
    # Cut before its ID type code: it may be a patient, so it is redacted as one.
    complete = block.endswith("/>") or _OBJECT_END.search(block)
    if not complete and not _IDTYPE_ELEMENT.search(block):
        return True
    # Not typed (no coded ID type): a patient unless its id is a DICOM UID.
    return not _IDTYPE_CODED.search(block) and not (start and _UID_ID.search(start.group(0)))


def _name_parts(name: str) -> set[str]:
    """Components of a DICOM PN (family^given=ideographic=phonetic) long enough to be safe to replace."""
    parts = {p.strip() for p in re.split(r"[\^=]", name)}
    return {p for p in parts if len(p) >= 3 or (len(p) >= 2 and not p.isascii())}


def _terms(raw_value: str, is_name: bool) -> set[str]:
    values = {raw_value.strip(), html.unescape(raw_value).strip()}
    terms: set[str] = set()
    for value in values:
        if not value or value == "<none>":
            continue
        terms.add(value)
        terms.add(html.escape(value, quote=True))
        terms.add(html.escape(value, quote=False))
        if is_name:
            terms |= _name_parts(value)
        else:
            number = value.split("^", 1)[0]  # CX: id^^^authority
            if len(number) >= 3:
                terms.add(number)
    return {t for t in terms if len(t) >= 3 or (t and not t.isascii())}


def _sensitive_base64(value: str, terms: set[str]) -> bool:
    """Whether an encoded value names a patient; one that does not decode cleanly cannot be
    checked (unpadded, URL-safe, with character references) and counts as sensitive."""
    try:
        decoded = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return True
    text = decoded.decode("utf-8", errors="replace")
    return bool(_HL7_PATIENT_SEGMENT.search(text)) or any(term in text for term in terms)


def redact_patients(text: str) -> str:
    """The raw frame with patient ids and names (and blobs that carry them) replaced."""
    return _redact(text)[0]


def _redact(text: str) -> tuple[str, set[str]]:
    """(the redacted frame, the patient ids and names found in it, with their forms)."""
    terms: set[str] = set()

    def block(match: re.Match[str]) -> str:
        content = match.group(0)
        if not _is_patient_block(content):
            return content

        def object_id(m: re.Match[str]) -> str:
            terms.update(_terms(m.group(3), is_name=False))
            return f"{m.group(1)}{m.group(2)}{PATIENT_REDACTED}{m.group(4)}"

        def object_name(m: re.Match[str]) -> str:
            # the name as a reader sees it: CDATA markers and comments are not part of it
            terms.update(_terms(_MARKUP.sub("", m.group(2)), is_name=True))
            return f"{m.group(1)}{PATIENT_REDACTED}{m.group(3)}"

        # the first id (the pattern starts with \b, so the engine cannot skip to its name by itself)
        first = _OBJECT_ID.search(content, max(content.find("ParticipantObjectID"), 0))
        if first is not None:
            content = content[:first.start()] + object_id(first) + content[first.end():]
        return _OBJECT_NAME.sub(object_name, content)

    text = _OBJECT_BLOCK.sub(block, text)
    cut = not _MESSAGE_END.search(text)
    if cut:
        text = _DESCRIPTION.sub(lambda m: f"{m.group(1)}{PATIENT_REDACTED}{m.group(3)}" if m.group(2).strip()
                                else m.group(0), text)

    # A value cut by the end of the frame cannot be decoded whole: redacted, as it may name a patient.
    def query(m: re.Match[str]) -> str:
        sensitive = cut or not m.group(3).startswith("</") or _sensitive_base64(m.group(2), terms)
        return f"{m.group(1)}{PATIENT_REDACTED}{m.group(3)}" if sensitive else m.group(0)

    def detail(m: re.Match[str]) -> str:
        if cut or not m.group(4) or _sensitive_base64(m.group(3), terms):
            return f"{m.group(1)}{m.group(2)}{PATIENT_REDACTED}{m.group(4)}"
        return m.group(0)

    text = _QUERY.sub(query, text)
    text = _DETAIL_VALUE.sub(detail, text)
    text = _URI_PATIENT.sub(lambda m: f"{m.group(1)}{PATIENT_REDACTED}", text)
    pattern = terms_pattern(_with_prefixes(terms), text) if terms else None
    if pattern is not None:
        text = pattern.sub(PATIENT_REDACTED, text)
    return text, terms


def _with_prefixes(terms: set[str]) -> set[str]:
    """The terms and the first 6 characters of each longer one: a value cut elsewhere (a field
    capped, a frame cut) still names the patient by its start."""
    return terms | {t[:6] for t in terms if len(t) > 6}


def scrub_document(doc: Any, terms: set[str]) -> Any:
    """Every string of a normalized event (keys too) with the patient terms replaced; the raw
    patient id (pacs.patient.id, which the pipeline hashes) is left to the caller."""
    if not terms:
        return doc
    # Only the terms found in the document's JSON text (keys and values; a string's JSON form holds
    # each term of it in its JSON form) can match in any of its strings: mostly none is there.
    text = json.dumps(doc, ensure_ascii=False)
    present = [term for term in _with_prefixes(terms) if encode_basestring(term)[1:-1] in text]
    if not present:
        return doc
    pattern = alternation(present)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return pattern.sub(PATIENT_REDACTED, value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {walk(k): walk(v) for k, v in value.items()}
        return value

    return walk(doc)


# ------------------------------------------------------------------ envelope
#
# Only this parser may produce the envelope (the router believes what it says: format, actor,
# time), so it is signed with a key only the collector and the pipeline hold (the envelope key,
# core/secrets.py; in the cluster it sits in a stored script only the installer role can read):
#
#     {"pacsguard_format":"atna","mac":"<64 hex>",<body>
#
# The MAC covers <body>, the exact text after the MAC (the rest of the JSON object), so there is
# no canonical form to disagree on: the pipeline checks the bytes it then parses. The body is
# ASCII (JSON escapes), so both sides hash the same bytes whatever the text holds.
#
# The MAC is HMAC-SHA256 (RFC 2104) with one change the pipeline needs: painless has SHA-256 only
# as String.sha256() (UTF-8 bytes in, hex out), so the inner digest enters the outer hash as its
# 64 hex characters instead of 32 raw bytes. The key is 64 hex characters, exactly one SHA-256
# block, and key XOR ipad / XOR opad stay ASCII, so both keyed blocks are what RFC 2104 hashes.
# Soundness is HMAC's (NMAC over a keyed compression function): the outer hash sees a fixed
# 64-character value under its own secret block, so a length extension of the inner hash gains
# nothing, and hex is a fixed-length injective encoding of the inner digest.

ENVELOPE_PREFIX = '{"pacsguard_format":"atna","mac":"'
_envelope_key: str | None = None


def set_envelope_key(key: str) -> None:
    """The key the collector signs with (run_collector sets it from the settings)."""
    global _envelope_key
    _envelope_key = key


def envelope_key_id() -> str:
    """Names the envelope key without revealing it: every collector instance must show the same one
    (the pipeline refuses envelopes signed with another key as forged)."""
    return hashlib.sha256(b"pacsguard-envelope-key:" + _key().encode()).hexdigest()[:12]


def _key() -> str:
    if _envelope_key is None:
        # Not set by the collector service (a test, a library use): the environment's settings.
        from pacsguard.core.secrets import resolve_envelope_key
        from pacsguard.core.settings import load_settings

        set_envelope_key(resolve_envelope_key(load_settings()))
    assert _envelope_key is not None
    return _envelope_key


def envelope_mac(key: str, body: str) -> str:
    inner_keyed, outer_keyed = _keyed(key)
    inner = inner_keyed.copy()
    inner.update(body.encode("utf-8"))
    outer = outer_keyed.copy()
    outer.update(inner.hexdigest().encode("ascii"))
    return outer.hexdigest()


@functools.lru_cache(maxsize=4)
def _keyed(key: str) -> tuple[Any, Any]:
    """SHA-256 states that have hashed key XOR ipad / key XOR opad (one block each): copied for each
    message instead of hashing the key blocks again, as HMAC implementations do."""
    block = key.encode("ascii")
    return hashlib.sha256(bytes(b ^ 0x36 for b in block)), hashlib.sha256(bytes(b ^ 0x5C for b in block))


def signed_envelope(fields: dict[str, Any]) -> str:
    """The envelope text: the prefix, the MAC, then the fields as the rest of the JSON object."""
    body = json.dumps(fields, ensure_ascii=True)[1:]  # '"original": ..., "doc": {...}}'
    return f'{ENVELOPE_PREFIX}{envelope_mac(_key(), body)}",{body}'


def failure_envelope(original: str, error: str) -> str:
    """An ATNA event the collector could not normalize: the pipeline sends it to the failure index."""
    limit = ROUTER_MAX_CHARS - len(error) - 400
    original = original[:max(limit, 0)]
    message = signed_envelope({"original": original, "error": f"collector: {error}"})
    # JSON escapes may have grown it past the router's limit: cut the original further.
    while len(message) > ROUTER_MAX_CHARS and original:
        original = original[:len(original) - (len(message) - ROUTER_MAX_CHARS) - 16]
        message = signed_envelope({"original": original, "error": f"collector: {error}"})
    return message


def atna_message(frame_text: str, xml_text: str, hostname: str | None, timestamp: str | None,
                 max_bytes: int) -> tuple[str, str | None]:
    """(the ``message`` to send, the parse error or None)."""
    original, terms = _redact(frame_text)
    try:
        doc, partial = read_audit_message(xml_text, max_bytes=max_bytes, fallback_timestamp=timestamp)
    except AtnaParseError as exc:
        return failure_envelope(original, str(exc)), str(exc)
    except Exception as exc:  # a parser bug must not cost the event or the collector
        log.exception("ATNA parser crashed on a frame: keeping it as a failure")
        error = f"parser error {type(exc).__name__}: {exc}"
        return failure_envelope(original, error), error
    if hostname:
        observer = doc.setdefault("observer", {})
        if isinstance(observer, dict) and not observer.get("hostname"):
            observer["hostname"] = hostname
    doc = _pseudonymized(doc, terms)
    envelope: dict[str, Any] = {"original": original, "doc": doc}
    if partial:
        envelope["partial"] = partial  # indexed with what was read, tagged pacsguard-partial
    message = signed_envelope(envelope)
    if len(message) > ROUTER_MAX_CHARS:
        # The router would refuse it with the whole envelope (raw patient id in
        # doc) as event.original; send the redacted frame alone instead.
        error = f"ATNA envelope is {len(message)} characters, above the router's {ROUTER_MAX_CHARS}"
        return failure_envelope(original, error), error
    return message, None


def _pseudonymized(doc: dict[str, Any], terms: set[str]) -> dict[str, Any]:
    """Once a value is known to be the patient's, it leaves every field (issue 17), not only the
    original: the patient id stays only in pacs.patient.id, which the pipeline hashes."""
    patient = doc.get("pacs", {}).get("patient", {})
    patient_id = patient.pop("id", None) if isinstance(patient, dict) else None
    if isinstance(patient_id, str):
        terms = terms | _terms(patient_id, is_name=False)
    doc = scrub_document(doc, terms)
    if patient_id is not None:
        doc.setdefault("pacs", {}).setdefault("patient", {})["id"] = patient_id
    return doc
