"""One DICOM PS3.15 / IHE ATNA ``AuditMessage`` -> one pacsguard event (docs/schema.md).

The collector receives ATNA XML over syslog and OpenSearch has no XML processor,
so this module does the XML work in Python, with the standard library only.

Three steps, each in its own section below:

1. ``_read_xml``: expat's callbacks fill small typed records as the XML streams
   (``_Reader``; no tree). We drive expat ourselves so that a DOCTYPE is refused the
   moment it starts: no DTD means no entity can be declared, which closes
   billion-laughs and external-entity tricks before anything is expanded.
2. The records. Both coded-value spellings (``csd-code``/``originalText`` and
   ``code``/``displayName``) meet in ``_coded``.
3. ``_to_event``: the records become the normalized event. Patient names never
   leave this module and free text is scrubbed of patient identifiers (D8).
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple
from xml.parsers import expat

from pacsguard.core.errors import PacsguardError

DEFAULT_MAX_BYTES = 1024 * 1024
"""Largest message we parse. Real audit messages are a few KiB; HL7 payloads
inside ParticipantObjectDetail can reach tens of KiB."""

REDACTED = "[REDACTED]"


class AtnaParseError(PacsguardError):
    """The input is not a usable ATNA AuditMessage; the message says what is wrong."""


def parse_audit_message(
    xml: bytes | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    fallback_timestamp: str | None = None,
) -> dict[str, Any]:
    """Convert one ATNA AuditMessage into a JSON-ready event in the pacsguard schema.

    ``fallback_timestamp`` (ISO 8601) is used only when the message has no
    EventDateTime, e.g. the syslog TIMESTAMP the collector saw; without it such
    a message is rejected. ``event.original`` is left to the collector.
    """
    reader, problem = _read_xml(xml, max_bytes)
    if problem:
        raise AtnaParseError(problem)
    return _to_event(reader.message(), fallback_timestamp)


def read_audit_message(
    xml: bytes | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    fallback_timestamp: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Like parse_audit_message, but a message that is malformed part of the way (cut short,
    a bad byte or tag after the event was described) gives the event read up to the fault,
    and the problem: (event, [problem]). A partial parse is indexed and tagged; only a message
    with nothing usable (no AuditMessage, no EventIdentification with an EventID, no time)
    raises AtnaParseError. A DOCTYPE, an entity or an oversized message is refused whole."""
    reader, problem = _read_xml(xml, max_bytes)
    if problem is None:
        return _to_event(reader.message(), fallback_timestamp), []
    try:
        # Free text is withheld: the patient objects that say what to scrub from it may be past the fault.
        event = _to_event(reader.message(), fallback_timestamp, complete=False)
    except AtnaParseError as exc:
        raise AtnaParseError(f"{problem}, and what came before it is not usable: {exc}") from None
    return event, [f"{problem}; what follows it was not read"]


# --------------------------------------------------------------------------
# 1. Safe XML, read as it streams
# --------------------------------------------------------------------------
#
# No tree: expat's callbacks fill the records below directly, keeping only the elements and
# attributes the mapping reads (a closed list), and skipping every other subtree. What is read is
# what a tree walk would read: the first EventIdentification of the root, its first EventID, the
# first of each single-valued child, every ActiveParticipant / ParticipantObjectIdentification,
# and an element's text up to its first child element (issue 22: the tree, the walk and the
# pruning after it were most of the collector's time).

_ROOT, _IDENT, _PARTICIPANT, _OBJECT, _DESCRIPTION, _CONTAINS = range(6)
_NAMES = frozenset({
    "AuditMessage", "EventIdentification", "ActiveParticipant", "ParticipantObjectIdentification",
    "AuditSourceIdentification", "EventID", "EventTypeCode", "EventOutcomeDescription", "RoleIDCode",
    "UserIDTypeCode", "ParticipantObjectIDTypeCode", "ParticipantObjectName", "ParticipantObjectQuery",
    "ParticipantObjectDetail", "ParticipantObjectDescription", "SOPClass", "ParticipantObjectContainsStudy",
    "StudyIDs"})


def _read_xml(xml: bytes | str, max_bytes: int) -> tuple[_Reader, str | None]:
    """The reader filled from the XML, and the XML fault after which nothing more was read (None if
    well-formed)."""
    data, encoding = _as_bytes(xml)
    if len(data) > max_bytes:
        raise AtnaParseError(f"audit message is {len(data)} bytes, over the {max_bytes}-byte limit")
    reader = _Reader()
    parser = _safe_expat(reader, encoding)
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        problem = f"malformed XML: {expat.ErrorString(exc.code)} at line {exc.lineno}, column {exc.offset}"
        if not reader.stack:
            raise AtnaParseError(problem) from None  # no element open: not even a root to read
        reader.end_text()
        return reader, problem
    except LookupError as exc:  # the XML declaration names an encoding Python does not know
        raise AtnaParseError(f"malformed XML: {exc}") from None
    finally:
        reader.parser = None  # the parser holds the reader's methods: no cycle left for the collector
    return reader, None


def _as_bytes(xml: bytes | str) -> tuple[bytes, str | None]:
    """Bytes for expat, plus an encoding override when we did the encoding ourselves."""
    if isinstance(xml, str):
        # A str has no bytes of its own; we encode it, so its declaration (if
        # any) no longer describes the data and expat must be told UTF-8.
        return xml.lstrip().encode("utf-8"), "UTF-8"
    if not isinstance(xml, (bytes, bytearray, memoryview)):
        raise AtnaParseError(f"audit message must be bytes or str, not {type(xml).__name__}")
    # Senders put stray newlines before the XML declaration, which XML forbids.
    return bytes(xml).lstrip(b" \t\r\n"), None


def _safe_expat(reader: _Reader, encoding: str | None) -> Any:
    parser = expat.ParserCreate(encoding)
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_external_entity
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    reader.parser = parser  # text is taken only inside the elements whose text is read (start_text)
    return parser


def _refuse_doctype(name: str, *_: Any) -> None:
    raise AtnaParseError(f"DOCTYPE is not allowed in an audit message (found <!DOCTYPE {name}>)")


def _refuse_entity(name: str, *_: Any) -> None:
    raise AtnaParseError(f"entity declarations are not allowed in an audit message (found {name!r})")


def _refuse_external_entity(*_: Any) -> int:
    raise AtnaParseError("external entities are not allowed in an audit message")


def _local(tag: str) -> str:
    """Element name without a namespace or prefix: senders differ, the names don't."""
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def _attr(attrs: dict[str, str], name: str) -> str | None:
    value = attrs.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


class _Reader:
    """expat callbacks that fill the message's records while the XML streams through.

    ``stack`` holds, per open element, what its children are (_ROOT ... _CONTAINS), or None for an
    element whose children are not read."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.stack: list[int | None] = []
        self.root_tag: str | None = None
        self.identification: dict[str, str] | None = None
        self.event_id: dict[str, str] | None = None
        self.type_codes: list[_Coded] = []
        self.outcome_description: str | None = None
        self.description_seen = False
        self.source_seen = False
        self.source_id: str | None = None
        self.participants: list[_Participant] = []
        self.objects: list[_Object] = []
        self._text: list[str] | None = None
        self._text_into: tuple[Any, str] = (None, "")

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        stack = self.stack
        if self._text is not None:
            self.end_text()  # a child element: the text read is what came before it
        if not stack:
            self.root_tag = tag
            stack.append(_ROOT if _local(tag) == "AuditMessage" else None)
            return
        within = stack[-1]
        if within is None:
            stack.append(None)
            return
        name = tag if tag in _NAMES else _local(tag)
        children: int | None = None
        if within == _ROOT:
            if name == "ActiveParticipant":
                self.participants.append(_Participant(attrs))
                children = _PARTICIPANT
            elif name == "ParticipantObjectIdentification":
                self.objects.append(_Object(attrs))
                children = _OBJECT
            elif name == "EventIdentification":
                if self.identification is None:
                    self.identification = attrs
                    children = _IDENT
            elif name == "AuditSourceIdentification" and not self.source_seen:
                self.source_seen = True
                self.source_id = _attr(attrs, "AuditSourceID")
        elif within == _OBJECT:
            self.objects[-1].child(self, name, attrs)
            children = _DESCRIPTION if name == "ParticipantObjectDescription" else None
        elif within == _PARTICIPANT:
            participant = self.participants[-1]
            if name == "RoleIDCode":
                coded = _coded(attrs)
                if coded is not None:
                    participant.roles.append(coded)
            elif name == "UserIDTypeCode" and not participant.id_type_seen:
                participant.id_type_seen = True
                participant.id_type = _coded(attrs)
        elif within == _IDENT:
            if name == "EventTypeCode":
                coded = _coded(attrs)
                if coded is not None:
                    self.type_codes.append(coded)
            elif name == "EventID":
                if self.event_id is None:
                    self.event_id = attrs
            elif name == "EventOutcomeDescription" and not self.description_seen:
                self.description_seen = True
                self.start_text(self, "outcome_description")
        elif within == _DESCRIPTION:
            if name == "SOPClass":
                self.objects[-1].raw_counts.append(_attr(attrs, "NumberOfInstances"))
            elif name == "ParticipantObjectContainsStudy":
                children = _CONTAINS
        elif within == _CONTAINS and name == "StudyIDs":
            uid = _attr(attrs, "UID")
            if uid:
                self.objects[-1].contained_studies.append(uid)
        stack.append(children)

    def end(self, _tag: str) -> None:
        self.stack.pop()
        if self._text is not None:
            self.end_text()

    def start_text(self, record: Any, field: str) -> None:
        self._text, self._text_into = [], (record, field)
        self.parser.CharacterDataHandler = self._text.append

    def end_text(self) -> None:
        """The text element's text (stripped, None if empty) goes to its record."""
        if self._text is None:
            return
        record, field = self._text_into
        setattr(record, field, "".join(self._text).strip() or None)
        self._text = None
        if self.parser is not None:
            self.parser.CharacterDataHandler = None

    def message(self) -> _Message:
        if _local(self.root_tag or "") != "AuditMessage":
            raise AtnaParseError(f"root element is <{self.root_tag}>, expected <AuditMessage>")
        identification = self.identification
        if identification is None:
            raise AtnaParseError("AuditMessage has no EventIdentification")
        if self.event_id is None:
            raise AtnaParseError("EventIdentification has no EventID")
        event_id = _coded(self.event_id)
        if event_id is None:
            raise AtnaParseError("EventID has no csd-code or code attribute")
        action = _attr(identification, "EventActionCode")
        event = _Event(event_id, tuple(self.type_codes), action.upper() if action else None,
                       _attr(identification, "EventDateTime"), _attr(identification, "EventOutcomeIndicator"),
                       self.outcome_description)
        for obj in self.objects:
            obj.instance_counts = tuple(int(v) for v in obj.raw_counts if v is not None and v.isdigit())
        return _Message(event, tuple(self.participants), self.source_id, tuple(self.objects))


# --------------------------------------------------------------------------
# 2. Typed records
# --------------------------------------------------------------------------


class _Coded(NamedTuple):
    code: str
    text: str | None


def _coded(attrs: dict[str, str]) -> _Coded | None:
    """Accept DICOM (csd-code/originalText) and RFC 3881 (code/displayName) spellings."""
    code = _attr(attrs, "csd-code") or _attr(attrs, "code")
    if code is None:
        return None
    return _Coded(code, _attr(attrs, "originalText") or _attr(attrs, "displayName"))


class _Event(NamedTuple):
    event_id: _Coded
    type_codes: tuple[_Coded, ...]
    action_code: str | None
    date_time: str | None
    outcome_indicator: str | None
    outcome_description: str | None


class _Participant:
    """One ActiveParticipant, filled by the reader."""

    __slots__ = ("alt_user_id", "id_type", "id_type_seen", "nap_id", "nap_type", "requestor", "roles", "user_id",
                 "user_name", "user_type")

    def __init__(self, attrs: dict[str, str]) -> None:
        self.user_id = _attr(attrs, "UserID")
        self.alt_user_id = _attr(attrs, "AlternativeUserID")
        self.user_name = _attr(attrs, "UserName")
        self.requestor = (_attr(attrs, "UserIsRequestor") or "").lower() in ("true", "1")
        self.user_type = _attr(attrs, "UserTypeCode")
        self.nap_id = _attr(attrs, "NetworkAccessPointID")
        self.nap_type = _attr(attrs, "NetworkAccessPointTypeCode")
        self.roles: list[_Coded] = []
        self.id_type: _Coded | None = None
        self.id_type_seen = False

    @property
    def is_person(self) -> bool:
        if self.user_type == "1" or self.user_name:
            return True
        id_type = self.id_type
        return id_type is not None and (
            id_type.code == _PERSON_ID or (id_type.text or "").lower() == "person id"
        )

    @property
    def is_application(self) -> bool:
        return self.user_type == "2" or any(role.code == _ROLE_APPLICATION for role in self.roles)

    @property
    def is_destination(self) -> bool:
        return any(role.code == _ROLE_DESTINATION for role in self.roles)

    @property
    def is_uri(self) -> bool:
        """dcm4chee names its own endpoints by request URI; those are not users."""
        if self.id_type is not None and self.id_type.code == _USER_ID_URI:
            return True
        value = self.user_id or ""
        return "://" in value or value.startswith("/")


class _Object:
    """One ParticipantObjectIdentification, filled by the reader. ``name`` is read only so that it
    can be scrubbed from free text; it is never output."""

    __slots__ = ("contained_studies", "details", "id_type", "instance_counts", "name", "object_id", "query",
                 "raw_counts", "role", "seen")

    def __init__(self, attrs: dict[str, str]) -> None:
        self.object_id = _attr(attrs, "ParticipantObjectID")
        self.role = _attr(attrs, "ParticipantObjectTypeCodeRole")
        self.id_type: _Coded | None = None
        self.name: str | None = None
        self.query: str | None = None
        self.details: list[tuple[str, str]] = []
        self.raw_counts: list[str | None] = []  # SOPClass NumberOfInstances, made numbers by _Reader.message
        self.instance_counts: tuple[int, ...] = ()
        self.contained_studies: list[str] = []  # storage commitment's ParticipantObjectContainsStudy
        self.seen: set[str] = set()  # the single-valued children met: the first one counts

    def child(self, reader: _Reader, name: str, attrs: dict[str, str]) -> None:
        if name == "ParticipantObjectDetail":
            self.details.append((_attr(attrs, "type") or "", _attr(attrs, "value") or ""))
        elif name in _OBJECT_SINGLES and name not in self.seen:
            self.seen.add(name)
            if name == "ParticipantObjectIDTypeCode":
                self.id_type = _coded(attrs)
            else:
                reader.start_text(self, _OBJECT_SINGLES[name])

    @property
    def is_study(self) -> bool:
        return self.id_type is not None and self.id_type.code == _STUDY_INSTANCE_UID

    @property
    def is_patient(self) -> bool:
        """Typed as a patient (ID type 1/2/5, or object role 1 "Patient"), or, conservatively, not
        typed at all (several archives send patients so) unless its id is a DICOM UID."""
        if self.role == _ROLE_PATIENT or (self.id_type is not None and self.id_type.code in _PATIENT_ID_TYPES):
            return True
        if self.id_type is None:
            return not _DICOM_UID.match(self.object_id or "")
        return (self.id_type.text or "").strip().lower() in _PATIENT_ID_TYPE_NAMES


_OBJECT_SINGLES = {"ParticipantObjectIDTypeCode": "id_type", "ParticipantObjectName": "name",
                   "ParticipantObjectQuery": "query"}


class _Message(NamedTuple):
    event: _Event
    participants: tuple[_Participant, ...]
    source_id: str | None
    objects: tuple[_Object, ...]


# --------------------------------------------------------------------------
# 3. Mapping to the schema
# --------------------------------------------------------------------------

# DICOM / RFC 3881 codes the mapping depends on.
_PERSON_ID = "113871"
_USER_ID_URI = "12"
_ROLE_APPLICATION = "110150"
_ROLE_DESTINATION = "110152"
_STUDY_INSTANCE_UID = "110180"
# RFC 3881 ParticipantObjectIDTypeCode 1 Medical Record Number, 2 Patient Number, 5 Social Security Number.
_PATIENT_ID_TYPES = frozenset({"1", "2", "5"})
_PATIENT_ID_TYPE_NAMES = frozenset({"patient number", "patient id", "medical record number"})
_ROLE_PATIENT = "1"
_DICOM_UID = re.compile(r"^[0-9]+(?:\.[0-9]+)+$")

# category/type per action: mirrors pack/schema.yaml (a test keeps them equal;
# this module is standard-library only, so it cannot read the YAML itself).
ACTION_ECS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "user-login": (("authentication",), ("start",)),
    "user-logout": (("authentication",), ("end",)),
    "user-update": (("iam",), ("user", "change")),
    "role-grant": (("iam",), ("user", "change", "admin")),
    "study-view": (("file",), ("access",)),
    "study-query": (("database",), ("access",)),
    "study-export": (("file",), ("access",)),
    "study-delete": (("file",), ("deletion",)),
    "study-import": (("file",), ("creation",)),
    "security-alert": (("configuration",), ("info",)),
    "config-change": (("configuration",), ("change",)),
    "patient-record": (("database",), ("change",)),
    "other": (("process",), ("info",)),
}

# EventIDs whose action does not depend on anything else in the message.
_EVENT_ID_ACTIONS = {
    "110100": "config-change",  # Application Activity (start/stop)
    "110101": "security-alert",  # Audit Log Used
    "110105": "study-delete",
    "110106": "study-export",
    "110107": "study-import",
    "110108": "security-alert",  # Network Entry
    "110110": "patient-record",
    "110112": "study-query",
    # dcm4chee-arc sends the Login/Logout type code as EventID (user-authentication sample).
    "110122": "user-login",
    "110123": "user-logout",
}

_AUTHENTICATION_TYPES = {"110122": "user-login", "110123": "user-logout", "110126": "user-login"}

# Security Alert (110113) type codes with a more specific action; every other
# type (emergency override 110127/110138, restricted function 110132, dcm4chee
# task and association alerts) stays "security-alert".
_SECURITY_ALERT_TYPES = {
    "110126": "user-login",  # Node Authentication
    "110128": "config-change",  # Network Configuration
    "110129": "config-change",  # Security Configuration
    "110130": "config-change",  # Hardware Configuration
    "110131": "config-change",  # Software Configuration
    "110136": "role-grant",  # Security Roles Changed
    "110137": "user-update",  # User Security Attributes Changed (e.g. password update)
}

_OUTCOMES = {
    "0": ("success", None),
    "4": ("failure", "minor"),
    "8": ("failure", "serious"),
    "12": ("failure", "major"),
}

# ParticipantObjectDetail types safe and useful to decode. Others (HL7v2
# messages, DICOM identifiers, task JSON) carry patient data or are bulky.
_DECODED_DETAILS = frozenset(
    {"Alert Description", "Count", "Failed", "Filters", "QueueName", "PatientVerificationStatus", "MSH-9"}
)
_ERROR_DETAIL = re.compile(r"error|reason", re.IGNORECASE)


def _to_event(message: _Message, fallback_timestamp: str | None, complete: bool = True) -> dict[str, Any]:
    actor = _pick_actor(message.participants)
    action = _action(message)
    scrub = _PhiScrubber(message.objects, complete)
    details = _decoded_details(message.objects, scrub)
    return _compact({
        "@timestamp": _timestamp(message.event.date_time, fallback_timestamp),
        "event": _event_fields(message.event, action, details, scrub),
        "user": _user_fields(actor, action, details),
        "source": _compact(_source_fields(actor, message.participants)),
        "related": _compact(_related_fields(actor, message.participants)),
        "observer": _compact(_observer_fields(message)),
        "pacs": _pacs_fields(message, action, details, scrub),
    })


_EMPTY = (None, "", [], {})


def _compact(fields: dict[str, Any]) -> dict[str, Any]:
    """Drop None and empty values so the event holds only what the source said. Each object is
    compacted as it is built, its members first (the event has no list of objects)."""
    return {k: v for k, v in fields.items() if v not in _EMPTY}


# -- when -------------------------------------------------------------------

_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE
)


def _timestamp(raw: str | None, fallback: str | None) -> str:
    if raw is None:
        if fallback is None:
            raise AtnaParseError("EventIdentification has no EventDateTime")
        raw = fallback
    match = _DATETIME.match(raw.strip())
    if match is None:
        raise AtnaParseError(f"EventDateTime {raw!r} is not an ISO 8601 date-time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    micro = int((match[7] or "0")[:6].ljust(6, "0"))
    try:
        moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=_offset(match[8]))
    except ValueError as exc:
        raise AtnaParseError(f"EventDateTime {raw!r} is not a valid date-time: {exc}") from None
    # Offset kept as sent: the ingest pipeline converts to UTC.
    return moment.isoformat(timespec="milliseconds")


def _offset(text: str | None) -> timezone | None:
    if text is None:
        return None
    if text.upper() == "Z":
        return timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


# -- what ---------------------------------------------------------------------


def _action(message: _Message) -> str:
    event = message.event
    code = event.event_id.code
    types = [t.code for t in event.type_codes]
    if code == "110114":
        return _first_match(types, _AUTHENTICATION_TYPES, default="other")
    if code == "110113":
        return _first_match(types, _SECURITY_ALERT_TYPES, default="security-alert")
    if code in ("110102", "110104"):
        return _transfer_action(message)
    if code == "110103":
        # Instances Accessed with action D is dcm4chee's rejection of series or
        # instances: a deletion, and watched as one.
        return "study-delete" if event.action_code == "D" else "study-view"
    return _EVENT_ID_ACTIONS.get(code, "other")


def _first_match(codes: list[str], table: dict[str, str], default: str) -> str:
    return next((table[c] for c in codes if c in table), default)


def _transfer_action(message: _Message) -> str:
    """Begin Transferring (110102) and Instances Transferred (110104).

    Create means instances came in. Otherwise instances went out: to a third
    node (a Destination that is neither the requestor nor the archive itself)
    that is an export; to the requestor itself (C-GET, WADO) it is a view.
    """
    if message.event.action_code == "C":
        return "study-import"
    if _remote_destination(message) is not None:
        return "study-export"
    return "study-view"


def _remote_destination(message: _Message) -> _Participant | None:
    for participant in message.participants:
        if participant.is_destination and not participant.requestor and not _is_local(participant, message):
            return participant
    return None


def _is_local(participant: _Participant, message: _Message) -> bool:
    """A participant that names the audit source itself (device name or one of its URLs)."""
    source = message.source_id
    value = participant.user_id or ""
    return bool(source) and (value == source or f"/{source}/" in value)


def _outcome(indicator: str | None) -> tuple[str, str | None]:
    return _OUTCOMES.get(indicator or "", ("unknown", None))


def _event_fields(event: _Event, action: str, details: dict[str, str], scrub: _PhiScrubber) -> dict[str, Any]:
    outcome, severity = _outcome(event.outcome_indicator)
    category, kind = ACTION_ECS[action]
    return _compact({
        "action": action,
        "category": list(category),
        "type": list(kind),
        "outcome": outcome,
        "code": event.event_id.code,
        "severity_name": severity,
        "reason": _reason(event, details, scrub) if outcome == "failure" else None,
    })


def _reason(event: _Event, details: dict[str, str], scrub: _PhiScrubber) -> str | None:
    if event.outcome_description:
        return scrub(event.outcome_description)
    return next((text for kind, text in details.items() if _ERROR_DETAIL.search(kind)), None)


# -- who and from where --------------------------------------------------------


def _pick_actor(participants: tuple[_Participant, ...]) -> _Participant | None:
    """The requestor; among several, a person, then anything not an application."""
    requestors = [p for p in participants if p.requestor]
    if not requestors:
        return participants[0] if participants else None
    for wanted in (lambda p: p.is_person, lambda p: not p.is_application):
        chosen = next((p for p in requestors if wanted(p)), None)
        if chosen is not None:
            return chosen
    return requestors[0]


def _user_fields(actor: _Participant | None, action: str, details: dict[str, str]) -> dict[str, Any]:
    if actor is None:
        return {}
    fields: dict[str, Any] = {
        "name": actor.user_id or actor.user_name or actor.alt_user_id,
        "id": actor.alt_user_id,
        "roles": _unique(role.text or role.code for role in actor.roles),
    }
    if action in ("role-grant", "user-update"):
        fields.update(_keycloak_changes(details.get("Alert Description")))
    return _compact(fields)


def _keycloak_changes(description: str | None) -> dict[str, Any]:
    """dcm4chee's Keycloak listener writes 'Representation: <json>' / 'ResourcePath: ...'."""
    if not description:
        return {}
    lines = dict(line.split(": ", 1) for line in description.splitlines() if ": " in line)
    fields: dict[str, Any] = {}
    path = re.match(r"users/([^/\s]+)", lines.get("ResourcePath", "").strip())
    if path:
        fields["target"] = {"id": path[1]}
    representation = _json(lines.get("Representation"))
    if isinstance(representation, list):
        roles = _unique(str(r["name"]) for r in representation if isinstance(r, dict) and r.get("name"))
        fields["changes"] = _compact({"roles": roles})
    elif isinstance(representation, dict) and representation.get("username"):
        fields.setdefault("target", {})["name"] = str(representation["username"])
    return fields


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _source_fields(actor: _Participant | None, participants: tuple[_Participant, ...]) -> dict[str, Any]:
    """The actor's network access point; if it has none, another requestor's (same client side)."""
    if actor is None:
        return {}
    if actor.nap_id:
        return _address(actor.nap_id)
    if _ip(actor.user_id) is not None:
        return _address(actor.user_id or "")
    for other in participants:
        if other.requestor and other.nap_id:
            return _address(other.nap_id)
    return {}


def _address(value: str) -> dict[str, str]:
    # NetworkAccessPointTypeCode 2 claims an IP, but only a value that parses
    # as one may go to source.ip (an ip field rejects anything else).
    ip = _ip(value)
    return {"ip": ip} if ip is not None else {"address": value}


def _ip(value: str | None) -> str | None:
    """Normalized IP text, or None. An IPv6 zone (fe80::1%11) is dropped: ip fields refuse it."""
    if not value:
        return None
    # The same addresses and user ids come back in message after message (short ones only are kept).
    return _ip_text(value) if len(value) <= 80 else _ip_text.__wrapped__(value)


_IP_CHARACTERS = frozenset("0123456789abcdefABCDEF:.")


@functools.lru_cache(maxsize=4096)
def _ip_text(value: str) -> str | None:
    address = value.split("%", 1)[0].strip("[]")
    if not _IP_CHARACTERS.issuperset(address):
        return None  # ip_address refuses it too (a user id): without raising
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _related_fields(actor: _Participant | None, participants: tuple[_Participant, ...]) -> dict[str, Any]:
    people = [p for p in participants if not p.is_uri]
    users = [actor.user_id, actor.alt_user_id] if actor is not None and not actor.is_uri else []
    users += [value for p in people for value in (p.user_id, p.user_name)]
    ips = [_ip(value) for p in participants for value in (p.nap_id, p.user_id)]
    return {"user": _unique(users), "ip": _unique(ips)}


def _unique(values: Any) -> list[str]:
    """Order-preserving de-duplication that also drops empty values."""
    return list(dict.fromkeys(v for v in values if v))


def _observer_fields(message: _Message) -> dict[str, Any]:
    names = [message.source_id] + [p.user_id for p in message.participants]
    if any(_names_dcm4chee(name) for name in names):
        product = "dcm4chee-arc"
    else:
        product = message.source_id or "atna"
    return {"hostname": message.source_id, "product": product}


def _names_dcm4chee(value: str | None) -> bool:
    if not value:
        return False
    return value.lower().startswith("dcm4chee-arc") or "/dcm4chee-arc/" in value


# -- imaging facts ---------------------------------------------------------------


def _pacs_fields(
    message: _Message, action: str, details: dict[str, str], scrub: _PhiScrubber
) -> dict[str, Any]:
    studies = _study_uids(message.objects)
    instances = [n for o in message.objects if o.is_study for n in o.instance_counts]
    event = message.event
    return _compact({
        "source_format": "atna",
        "atna": _compact({
            "event_type_codes": _unique(t.code for t in event.type_codes),
            "action_code": event.action_code,
            "details": _compact(details),
        }),
        "study": _compact({"uids": studies, "count": len(studies) or None}),
        "instance": _compact({"count": sum(instances) if instances else None}),
        # Raw on purpose: the ingest pipeline salts and hashes it, then removes it.
        "patient": _compact({"id": _patient_id(message.objects)}),
        "query": _query(message.objects, scrub),
        "export": _compact({"destination": _export_destination(message) if action == "study-export" else None}),
    })


def _study_uids(objects: tuple[_Object, ...]) -> list[str]:
    uids: list[str | None] = []
    for obj in objects:
        if obj.is_study:
            uids += [obj.object_id, *obj.contained_studies]
    return _unique(uids)


def _patient_id(objects: tuple[_Object, ...]) -> str | None:
    # "<none>" is dcm4chee's placeholder for a missing id; hashing it would
    # merge unrelated events under one fake patient.
    ids = [o.object_id for o in objects if o.is_patient and o.object_id not in (None, "<none>")]
    return ids[0] if ids else None


def _export_destination(message: _Message) -> str | None:
    destination = _remote_destination(message)
    if destination is None:
        return None
    return destination.user_id or _ae_title(destination.alt_user_id)


def _ae_title(alt_user_id: str | None) -> str | None:
    """DICOM puts AE titles in AlternativeUserID as 'AETITLES=AE1;AE2'."""
    if alt_user_id and alt_user_id.upper().startswith("AETITLES="):
        return alt_user_id.split("=", 1)[1].split(";")[0] or None
    return None


def _query(objects: tuple[_Object, ...], scrub: _PhiScrubber) -> str | None:
    for obj in objects:
        raw = _b64decode(obj.query)
        if raw is not None:
            return scrub(_mask_hl7_query(raw.decode("utf-8", errors="replace")))
    return None


def _decoded_details(objects: tuple[_Object, ...], scrub: _PhiScrubber) -> dict[str, str]:
    details: dict[str, str] = {}
    for obj in objects:
        for kind, value in obj.details:
            if kind in details or not (kind in _DECODED_DETAILS or _ERROR_DETAIL.search(kind)):
                continue
            raw = _b64decode(value)
            if raw is not None:
                details[kind] = scrub(raw.decode("utf-8", errors="replace"))
    return details


def _b64decode(value: str | None) -> bytes | None:
    """Decoded bytes, or None for a missing or broken value: bad base64 must not lose the event."""
    if not value:
        return None
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


_HL7_QPD = re.compile(r"(^|[\r\n])(QPD\|[^|\r\n]*\|[^|\r\n]*)\|[^\r\n]*")


def _mask_hl7_query(text: str) -> str:
    """PIX/PDQ queries carry the searched patient's ids and demographics in QPD-3 onwards."""
    return _HL7_QPD.sub(lambda m: f"{m[1]}{m[2]}|{REDACTED}", text)


class _PhiScrubber:
    """Removes the message's patient ids and names from free text (reason, query, details)."""

    # dcm4chee renders patients in exception text as Patient[pk=.., id=[..], name=..].
    _DCM4CHEE_PATIENT = re.compile(r"Patient\[[^\[\]]*(?:\[[^\]]*\][^\[\]]*)*\]")

    def __init__(self, objects: tuple[_Object, ...], complete: bool = True) -> None:
        # A message read only up to an XML fault may have lost the patient objects naming what
        # to scrub: its free text is withheld whole.
        self._withhold = not complete
        terms: set[str] = set()
        for obj in objects:
            if obj.is_patient:
                terms |= self._id_terms(obj.object_id) | self._name_terms(obj.name)
        self._terms = terms

    @staticmethod
    def _id_terms(patient_id: str | None) -> set[str]:
        if not patient_id or patient_id == "<none>":
            return set()
        number = patient_id.split("^", 1)[0]
        return {patient_id} | ({number} if len(number) >= 3 else set())

    @staticmethod
    def _name_terms(name: str | None) -> set[str]:
        if not name:
            return set()
        parts = {part.strip() for part in re.split(r"[\^=]", name)}
        return {name} | {part for part in parts if len(part) >= 3}

    def __call__(self, text: str) -> str:
        if self._withhold:
            return REDACTED if text.strip() else text
        text = self._DCM4CHEE_PATIENT.sub(f"Patient{REDACTED}", text)
        pattern = terms_pattern(self._terms, text)
        return pattern.sub(REDACTED, text) if pattern else text


def terms_pattern(terms: Iterable[str], text: str) -> re.Pattern[str] | None:
    """The alternation of the terms that occur in ``text``, longest first (so "A^B" wins over "A"),
    or None when none does. It matches in ``text`` exactly what the alternation of all the terms
    would (a term absent from a text matches nowhere in it), and a patient's terms, new in nearly
    every message, are compiled only where they occur (issue 22: compiling them for every message
    was a third of the collector's time). Equal lengths need no order: at one position only one
    of them can match."""
    present = [term for term in terms if term in text]
    return alternation(present) if present else None


def alternation(terms: Iterable[str]) -> re.Pattern[str]:
    """One pattern for the terms, longest first."""
    return re.compile("|".join(map(re.escape, sorted(terms, key=len, reverse=True))))
