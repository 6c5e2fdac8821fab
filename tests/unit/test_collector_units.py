"""Collector parts that need no cluster: ids, queue bounds, spool, framing/conversion, redaction."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import corpus
import pytest
from pacsguard.collector.atna_envelope import PATIENT_REDACTED, atna_message, redact_patients
from pacsguard.collector.counters import Counters
from pacsguard.collector.events import Event, NetworkIds, make_id
from pacsguard.collector.files import keycloak_event_line
from pacsguard.collector.journal import Journal
from pacsguard.collector.service import Listen, parse_size
from pacsguard.collector.syslog_input import convert_frame
from pacsguard.core.errors import PacsguardError
from pacsguard.parsers.syslog import SyslogParseError
from phi import patient_terms

ATNA = corpus.folder("dicom-audit")
needs_samples = corpus.needs("dicom-audit")
OWN_ATNA = Path(__file__).resolve().parents[2] / "pipelines" / "atna" / "_dev" / "test" / "pipeline"


def ev(n: int, size: int = 10) -> Event:
    return Event(f"id{n}", "x" * size, "test")


# ------------------------------------------------------------------ ids, options


def test_ids_are_deterministic_and_length_prefixed() -> None:
    assert make_id("file", 1, 2, 0, 10, b"line") == make_id("file", 1, 2, 0, 10, b"line")
    assert make_id("ab", "c") != make_id("a", "bc")
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", make_id("x"))
    ids = NetworkIds()
    assert len({ids.next("udp") for _ in range(1000)}) == 1000
    assert NetworkIds().next("udp") != NetworkIds().next("udp")  # runs never collide


def test_sizes_and_listen_addresses() -> None:
    assert parse_size("1MiB") == 1024 * 1024
    assert parse_size("512MiB") == 512 * 1024 * 1024
    assert parse_size("10MB") == 10_000_000
    assert parse_size("4096") == 4096
    with pytest.raises(PacsguardError):
        parse_size("lots")
    assert Listen.parse("127.0.0.1:6514") == Listen("127.0.0.1", 6514)
    assert Listen.parse("514") == Listen("127.0.0.1", 514)  # loopback unless the operator says otherwise
    assert Listen.parse("0.0.0.0:514") == Listen("0.0.0.0", 514)
    assert Listen.parse("[::1]:514") == Listen("::1", 514)
    with pytest.raises(PacsguardError):
        Listen.parse("host:port")


def test_counters_moves_keep_the_invariant() -> None:
    c = Counters()
    c.receive("tcp", 5)
    c.reject_new("udp", "oversize")
    c.settle({"indexed": 2, "failed": 1}, {"tcp": 3})
    assert c.reconciles()
    snap = c.snapshot()
    assert (snap["received"], snap["indexed"], snap["failed"], snap["spooled"], snap["rejected"],
            snap["in_flight"]) == (6, 2, 1, 0, 1, 2)
    c.parked = True  # the cluster is away: what the journal holds is reported as spooled
    snap = c.snapshot()
    assert (snap["spooled"], snap["in_flight"]) == (2, 0) and c.reconciles()
    again = Counters()
    again.restore(c.saved(), pending=2, pending_by_source={"tcp": 2})
    assert again.snapshot()["received"] == 6 and again.snapshot()["resumed"] == 2 and again.reconciles()
    assert again.snapshot()["received_by_source"] == {"tcp": 5, "udp": 1}


# ------------------------------------------------------------------ journal


def drain(journal: Journal, size: int = 37) -> list[str]:
    seen: list[str] = []
    while (chunk := journal.next_chunk(size, 10**9)) is not None:
        seen += [e.id for e in chunk.events]
        journal.settle(chunk, lambda ready: {})
    return seen


def test_journal_keeps_order_across_segments_and_restarts(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=10 * 1024 * 1024, segment_bytes=4096)
    journal.load()
    events = [Event(f"id{n}", f"message {n} " + "é" * 50, "tcp") for n in range(200)]
    assert journal.append(events[:120]) == 120 and journal.append(events[120:]) == 80
    assert len(list(tmp_path.glob("seg-*.ndjson"))) > 1
    first = journal.next_chunk(50, 10**9)
    second = journal.next_chunk(50, 10**9)
    assert first is not None and second is not None
    assert [e.id for e in first.events] == [f"id{n}" for n in range(len(first.events))]
    journal.settle(second, lambda ready: {})  # out of order: nothing settles before the first chunk does
    assert journal.pending == 200
    journal.settle(first, lambda ready: {"indexed": sum(len(c.events) for c in ready)})
    settled = len(first.events) + len(second.events)
    assert journal.pending == 200 - settled
    journal.close()

    again = Journal(tmp_path, max_bytes=10 * 1024 * 1024, segment_bytes=4096)
    assert again.load() == {"indexed": settled}  # the counters saved with the offsets
    assert again.pending == 200 - settled
    assert drain(again) == [f"id{n}" for n in range(settled, 200)]
    assert again.empty() and again.used_bytes == 0


def test_unsettled_chunks_are_read_again_after_a_crash(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.load()
    journal.append([ev(n) for n in range(10)])
    chunk = journal.next_chunk(4, 10**9)
    assert chunk is not None and len(chunk.events) == 4  # sent, never settled: the process dies here
    again = Journal(tmp_path)
    again.load()
    assert again.pending == 10 and drain(again) == [f"id{n}" for n in range(10)]


def test_full_journal_takes_a_prefix(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=2000)
    journal.load()
    taken = journal.append([Event(f"id{n}", "y" * 100, "udp") for n in range(30)])
    assert 0 < taken < 30 and journal.used_bytes <= 2000
    assert not journal.space_for(200)
    chunk = journal.next_chunk(100, 10**9)
    assert chunk is not None and len(chunk.events) == taken


def test_a_half_written_journal_line_is_dropped_on_load(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.load()
    journal.append([ev(1), ev(2)])
    journal.close()
    segment = next(tmp_path.glob("seg-*.ndjson"))
    with segment.open("ab") as handle:
        handle.write(b'{"id": "id3", "mess')  # crash mid-write
    again = Journal(tmp_path)
    again.load()
    assert again.pending == 2


# ------------------------------------------------------------------ frames


def test_non_atna_frames_send_their_msg_and_bom_is_stripped() -> None:
    frame = b'<13>1 2026-11-27T10:00:00Z host app - - - \xef\xbb\xbf{"action":"user-login"}'
    assert convert_frame(frame, 1 << 20, strict=True).message == '{"action":"user-login"}'


def test_not_syslog_is_refused_on_udp_and_passed_on_over_tcp() -> None:
    with pytest.raises(SyslogParseError):
        convert_frame(b"<85>1 2026-11-27T10:00:00Z hos", 1 << 20, strict=True)
    kept = convert_frame(b"plain text line", 1 << 20, strict=False)
    assert kept.message == "plain text line" and kept.atna_error is None


def test_non_utf8_bytes_are_replaced_and_flagged() -> None:
    frame = b"<13>1 - host app - - - caf\xe9 \xff"
    converted = convert_frame(frame, 1 << 20, strict=True)
    assert converted.decode_error and converted.message == "caf\ufffd \ufffd"


def test_own_atna_frame_becomes_an_envelope_with_the_syslog_hostname() -> None:
    xml = (OWN_ATNA / "study-deleted.xml").read_bytes()
    frame = b"<85>1 2026-11-27T10:00:00Z pacs01 northpacs 1 IHE+RFC-3881 - \xef\xbb\xbf" + xml
    converted = convert_frame(frame, 1 << 20, strict=True)
    envelope = json.loads(converted.message)
    assert envelope["pacsguard_format"] == "atna" and converted.atna_error is None
    assert envelope["doc"]["event"]["action"] == "study-delete"
    assert envelope["doc"]["observer"]["hostname"] == "northpacs"  # the doc's own AuditSourceID wins
    assert "MRN-55012" not in envelope["original"] and "MORENO" not in envelope["original"]
    assert envelope["original"].startswith("<85>1 2026-11-27T10:00:00Z pacs01") and "\ufeff" not in envelope["original"]
    msg = (OWN_ATNA / "syslog-ihe-rfc3881-pix-query.syslog").read_bytes().split(b" - ", 1)[1]
    doc = json.loads(convert_frame(b"<85>1 2026-11-27T10:00:00Z pacs01 app 1 IHE+RFC-3881 - " + msg,
                                   1 << 20, strict=True).message)["doc"]
    assert doc["observer"]["hostname"] == "north-mpi"


@needs_samples
def test_atna_frame_becomes_an_envelope_with_the_syslog_hostname() -> None:
    xml = (ATNA / "dcm4chee-arc-cs-dicom-study-deleted-01-using-rest-api.xml").read_bytes()
    frame = b"<85>1 2026-11-27T10:00:00Z pacs01 dcm4chee 1 IHE+RFC-3881 - \xef\xbb\xbf" + xml
    converted = convert_frame(frame, 1 << 20, strict=True)
    envelope = json.loads(converted.message)
    assert envelope["pacsguard_format"] == "atna" and converted.atna_error is None
    assert envelope["doc"]["event"]["action"] == "study-delete"
    assert envelope["doc"]["observer"]["hostname"] == "dcm4chee-arc"  # the doc's own AuditSourceID wins
    assert "GE1118" not in envelope["original"] and "BUXTON" not in envelope["original"]
    assert envelope["original"].startswith("<85>1 2026-11-27T10:00:00Z pacs01") and "\ufeff" not in envelope["original"]
    bare = b"<85>1 2026-11-27T10:00:00Z pacs01 app 1 IHE+RFC-3881 - " + (ATNA / "openhim-core-js-testAuditMessage-pix-query.syslog").read_bytes().split(b" - ", 1)[1]
    doc = json.loads(convert_frame(bare, 1 << 20, strict=True).message)["doc"]
    assert doc["observer"]["hostname"] == "openhim"


def test_syslog_hostname_fills_a_missing_observer_hostname() -> None:
    xml = ('<AuditMessage><EventIdentification EventActionCode="E" EventDateTime="2026-11-27T10:00:00Z" '
           'EventOutcomeIndicator="0"><EventID csd-code="110114" codeSystemName="DCM"/>'
           '<EventTypeCode csd-code="110122" codeSystemName="DCM"/></EventIdentification>'
           '<ActiveParticipant UserID="alice" UserIsRequestor="true" NetworkAccessPointID="10.0.0.1" '
           'NetworkAccessPointTypeCode="2"/></AuditMessage>')
    message, error = atna_message(xml, xml, "pacs01", None, 1 << 20)
    assert error is None and json.loads(message)["doc"]["observer"]["hostname"] == "pacs01"


def test_xml_cut_after_the_event_yields_a_partial_envelope_with_patients_redacted() -> None:
    xml = ('<AuditMessage><EventIdentification EventActionCode="R" EventDateTime="2026-03-02T10:00:00Z" '
           'EventOutcomeIndicator="0"><EventID csd-code="110106" codeSystemName="DCM"/></EventIdentification>'
           '<ActiveParticipant UserID="dr.okafor" UserIsRequestor="true" NetworkAccessPointID="192.0.2.9" '
           'NetworkAccessPointTypeCode="2"/><ParticipantObjectIdentification '
           'ParticipantObjectID="PAT-77^^^HOSP" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1">'
           '<ParticipantObjectIDTypeCode csd-code="2"/><ParticipantObjectName>DOE^JANE</ParticipantObj')
    message, error = atna_message(xml, xml, "h", None, 1 << 20)
    envelope = json.loads(message)
    assert error is None and envelope["doc"]["event"]["action"] == "study-export"
    assert envelope["doc"]["user"]["name"] == "dr.okafor"
    assert envelope["partial"] == ["malformed XML: unclosed token at line 1, column 522; what follows it was not read"]
    assert "DOE" not in envelope["original"] and "PAT-77" not in envelope["original"]


def test_malformed_xml_still_yields_a_redacted_envelope_without_doc() -> None:
    xml = ('<AuditMessage><EventIdentification EventActionCode="R"><ParticipantObjectIdentification '
           'ParticipantObjectID="PAT-77^^^HOSP" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1">'
           '<ParticipantObjectIDTypeCode csd-code="2"/><ParticipantObjectName>DOE^JANE</ParticipantObjectName>')
    message, error = atna_message(xml, xml, "h", None, 1 << 20)
    envelope = json.loads(message)
    assert error and "doc" not in envelope and envelope["error"].startswith("collector: malformed XML")
    assert "PAT-77" not in message and "DOE" not in message and PATIENT_REDACTED in message


def test_redaction_removes_every_own_patient_id_and_name() -> None:
    found = 0
    for path in sorted(OWN_ATNA.glob("*.xml")) + sorted(OWN_ATNA.glob("*.syslog")):
        text = path.read_text()
        redacted = redact_patients(text)
        for term in patient_terms(text):
            found += 1
            assert term not in redacted, f"{path.name}: {term!r} survived"
    assert found > 30  # the inputs do name patients


@pytest.mark.parametrize("name", ["<![CDATA[DOE^JOHN]]>", "DOE<!-- a comment -->^JOHN", "<![CDATA[DOE^JO"])
def test_redaction_takes_a_name_whole_with_cdata_and_comments(name: str) -> None:
    xml = ('<AuditMessage><ParticipantObjectIdentification ParticipantObjectID="P-1234" ParticipantObjectTypeCode="1" '
           f'ParticipantObjectTypeCodeRole="1"><ParticipantObjectName>{name}')
    closed = xml + "</ParticipantObjectName></ParticipantObjectIdentification></AuditMessage>"
    for text in (xml, closed) if not name.endswith("JO") else (xml,):
        redacted = redact_patients(text)
        assert "DOE" not in redacted and "JO" not in redacted and "P-1234" not in redacted, redacted


def test_a_name_in_cdata_or_split_by_a_comment_is_found_elsewhere_in_the_frame() -> None:
    for name in ("<![CDATA[GARCIA^ROSA]]>", "GARCIA<!-- x -->^ROSA"):
        xml = ('<AuditMessage><EventIdentification><EventOutcomeDescription>Patient ROSA GARCIA not found'
               '</EventOutcomeDescription></EventIdentification><ParticipantObjectIdentification '
               'ParticipantObjectID="PAT-4411" ParticipantObjectTypeCodeRole="1"><ParticipantObjectIDTypeCode '
               f'csd-code="2"/><ParticipantObjectName>{name}</ParticipantObjectName>'
               '</ParticipantObjectIdentification></AuditMessage>')
        redacted = redact_patients(xml)
        assert "GARCIA" not in redacted and "ROSA" not in redacted and "PAT-4411" not in redacted, redacted


def test_a_self_closing_object_does_not_shield_the_patient_object_after_it() -> None:
    xml = ('<AuditMessage><ParticipantObjectIdentification ParticipantObjectID="1.2.3" ParticipantObjectTypeCode="2"/>'
           '<ParticipantObjectIdentification ParticipantObjectID="PAT-4411" ParticipantObjectTypeCodeRole="1">'
           '<ParticipantObjectIDTypeCode csd-code="2"/></ParticipantObjectIdentification></AuditMessage>')
    redacted = redact_patients(xml)
    assert "PAT-4411" not in redacted and 'ParticipantObjectID="1.2.3"' in redacted, redacted


@pytest.mark.parametrize("encode", [
    lambda b: base64.b64encode(b).decode().rstrip("="),          # padding stripped
    lambda b: base64.urlsafe_b64encode(b).decode(),               # URL-safe alphabet
    lambda b: "&#10;".join(base64.b64encode(b).decode()[i:i + 20] for i in range(0, 80, 20)),  # with references
])
def test_an_encoded_value_that_does_not_decode_cleanly_is_withheld(encode: Any) -> None:
    hl7 = b"MSH|^~\\&|ADT|HOSP|||20260302||ADT^A08|1|P|2.5\rPID|1||PAT-4411^^^HOSP||GARCIA^ROSA??>>"
    value = encode(hl7)
    xml = ('<AuditMessage><ParticipantObjectIdentification ParticipantObjectID="1.2.3" ParticipantObjectTypeCode="2">'
           f'<ParticipantObjectDetail type="HL7v2 Message" value="{value}"/></ParticipantObjectIdentification>'
           '</AuditMessage>')
    redacted = redact_patients(xml)
    assert value not in redacted and PATIENT_REDACTED in redacted, redacted


def test_redaction_holds_wherever_a_frame_is_cut() -> None:
    """A frame cut anywhere (a partial parse keeps its original) names no patient, not even
    the start of an id or name cut mid-value: an object whose kind the cut hides is redacted."""
    checked = 0
    for path in sorted(OWN_ATNA.glob("*.xml")):
        text = path.read_text()
        terms = {t for t in patient_terms(text) if len(t) >= 4}
        whole = redact_patients(text)
        for cut in range(text.find("<ParticipantObjectIdentification"), len(text)):
            redacted = redact_patients(text[:cut])
            for term in terms:
                for end in range(4, len(term) + 1):
                    prefix = term[:end]
                    assert prefix not in redacted or prefix in whole, f"{path.name} cut at {cut}: {prefix!r}"
            checked += 1
    assert checked > 5000


@needs_samples
def test_redaction_removes_every_sample_patient_id_and_name() -> None:
    for path in sorted(ATNA.iterdir()):
        text = path.read_text()
        redacted = redact_patients(text)
        for term in patient_terms(text):
            assert term not in redacted, f"{path.name}: {term!r} survived"


def test_keycloak_event_lines() -> None:
    assert keycloak_event_line('2021-10-22 WARN [org.keycloak.events] (task) type=LOGIN_ERROR, realmId=test')
    assert keycloak_event_line('Admin Event Occurred:operationType=CREATE, realmId=master')
    assert not keycloak_event_line("INFO [io.quarkus] Keycloak started in 4.2s")


def test_widening_the_connection_pool_keeps_tls_and_credentials() -> None:
    from pacsguard.collector.service import widen_pool
    from pacsguard.core.connection import Cluster
    from pacsguard.core.settings import ClusterSettings

    cluster = Cluster.connect(ClusterSettings(url="https://opensearch.example:9200", auth="basic", username="u",
                                              password="p4ss", verify_tls=False))
    before = cluster.client.transport.get_connection()
    widen_pool(cluster, 4)
    after = cluster.client.transport.get_connection()
    assert after is not before and after.pool.pool.maxsize == 4
    assert type(after.pool).__name__ == "HTTPSConnectionPool"
    assert after.headers.get("authorization") == before.headers.get("authorization") is not None


def test_an_acknowledged_active_segment_rotates_and_goes(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=64 * 1024 * 1024, rotate_settled_bytes=4096)
    journal.load()
    for n in range(10):
        journal.append([Event(f"r{n}-{i}", "z" * 100, "tcp") for i in range(20)])
        drain(journal)
    segments = list(tmp_path.glob("seg-*.ndjson"))
    # Everything is settled: no segment grows towards 64 MiB holding settled bytes, only the open one is left.
    assert len(segments) <= 1 and sum(p.stat().st_size for p in segments) < 4096 + 20 * 200


def test_a_failed_append_leaves_nothing_in_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    journal = Journal(tmp_path, segment_bytes=4096)
    journal.load()
    journal.append([ev(1)])
    real_write = os.write
    calls = {"n": 0}

    def full_after_one(fd: int, data: Any) -> int:  # the second segment's write finds the disk full
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_after_one)
    with pytest.raises(OSError):
        journal.append([Event(f"big{n}", "q" * 1000, "tcp") for n in range(8)])  # spans two segments
    monkeypatch.setattr(os, "write", real_write)
    assert journal.pending == 1 and drain(journal) == ["id1"]
    journal.close()
    again = Journal(tmp_path, segment_bytes=4096)
    again.load()
    assert again.pending == 0  # nothing half-written comes back after a restart either


def test_file_checkpoints_come_back_from_the_state_and_from_journaled_lines(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.load()
    journal.checkpoint("file:a", (1, 2, 0, 100))
    journal.save({})
    line = Event("l1", "text", "file:a.log", checkpoint=("file:a", (1, 2, 0, 180)))
    journal.append([line])  # journaled after the last state save (a kill -9 follows)
    again = Journal(tmp_path)
    again.load()
    assert again.checkpoints["file:a"][1:] == [1, 2, 0, 180]


def test_the_busiest_address_gives_up_a_silent_connection_to_a_newcomer() -> None:
    from pacsguard.collector.limits import Gate, Limits, Ticket

    gate = Gate(Limits(max_connections=4, max_connections_per_address=3, evict_silent_after=0.0))
    held = [gate.admit("10.0.0.1") for _ in range(3)] + [gate.admit("10.0.0.2")]
    assert all(isinstance(t, Ticket) for t in held)
    held.append(gate.admit("10.0.0.2"))  # 1 vs 3: one of the busiest address's silent connections goes
    assert isinstance(held[-1], Ticket) and dict(gate.by_address) == {"10.0.0.1": 2, "10.0.0.2": 2}
    assert gate.admit("10.0.0.2") == "too_many_connections"  # 2 vs 2: the input is simply full
    newcomer = gate.admit("10.0.0.3")
    assert isinstance(newcomer, Ticket) and gate.open == 4
    assert gate.refused == {"too_many_connections": 1, "evicted_silent": 2}
    for ticket in held:
        assert isinstance(ticket, Ticket)
        gate.leave(ticket)
        gate.leave(ticket)  # idempotent: an evicted connection's handler leaves again
    assert gate.open == 1 and dict(gate.by_address) == {"10.0.0.3": 1}
