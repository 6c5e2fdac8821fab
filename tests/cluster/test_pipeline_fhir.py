"""The FHIR pipeline through the real node (router -> fhir -> enrich), beyond the golden files:
PHI, Bundles, bad input and the code mappings, on our own inputs
(pipelines/fhir/_dev/test/pipeline) and hand-built events; and every file of the public corpus
../shared/samples/fhir-auditevent (skipped, with the reason, where absent) against a table written
by reading each sample (see the comment on each row), not by copying pipeline output.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import corpus
import pytest
from documents import get_path

FHIR_DIR = corpus.folder("fhir-auditevent")
OWN = Path(__file__).resolve().parents[2] / "pipelines" / "fhir" / "_dev" / "test" / "pipeline"
XML_SAMPLE = "hl7-fhir-auditevent-example-breakglass-start.R5plus.xml"

# Each row checks event.action, event.outcome, user.name, source.ip (None: no IP
# for the actor) and pacs.study.count (None: no study entity), plus the extra
# dotted fields named in `also`.
EXPECTED: dict[str, dict[str, Any]] = {
    # type 110114 + subtype 110122 Login; requestor agent: who.identifier.value "95",
    # network 127.0.0.1 type 2; source.observer.identifier "hl7connect..."; no entity.
    "audit-event-example-login.json": {
        "action": "user-login", "outcome": "success", "user": "95", "ip": "127.0.0.1", "studies": None,
        "also": {"event.code": "110114", "user.id": "95",
              "observer.hostname": "hl7connect.healthintersections.com.au"}},
    # same with subtype 110123 Logout.
    "audit-event-example-logout.json": {
        "action": "user-logout", "outcome": "success", "user": "95", "ip": "127.0.0.1", "studies": None,
        "also": {"event.code": "110114"}},
    # type 110106 Export to media (ITI-32); requestor "95" without network; a
    # Destination Media agent (DVD); patient entity with a CX identifier.
    "audit-event-example-media.json": {
        "action": "study-export", "outcome": "success", "user": "95", "ip": None, "studies": None,
        "also": {"event.code": "110106", "pacs.export.destination": "DVD",
              "observer.hostname": "hl7connect.healthintersections.com.au"}},
    # type 110112 Query (ITI-9 PIX); requestor "95" without network; a patient
    # entity and a base64 HL7v3 query.
    "audit-event-example-pixQuery.json": {
        "action": "study-query", "outcome": "success", "user": "95", "ip": None, "studies": None,
        "also": {"event.code": "110112"}},
    # type rest + subtype search; requestor "95"; query entity (an Encounter search URL).
    "audit-event-example-search.json": {
        "action": "study-query", "outcome": "success", "user": "95", "ip": None, "studies": None,
        "also": {"event.code": "rest",
              "pacs.query": "http://fhir-dev.healthintersections.com.au/open/Encounter?participant=13"}},
    # type rest + subtype vread, action R; requestor "95"; entity Patient/example/_history/1.
    "audit-event-example-vread.json": {
        "action": "study-view", "outcome": "success", "user": "95", "ip": None, "studies": None,
        "also": {"event.code": "rest", "pacs.atna.action_code": "R"}},
    # type 110106 Export (HIPAA disclosure); requestor who.identifier "SomeIdiot@nowhere"
    # with network custodian.net type 1 (a host name); destination agent 110152 at
    # marketing.land; observer display "Watchers Accounting of Disclosures Application".
    "auditevent-example-disclosure.json": {
        "action": "study-export", "outcome": "success", "user": "SomeIdiot@nowhere", "ip": None, "studies": None,
        "also": {"source.address": "custodian.net", "pacs.export.destination": "marketing.land",
              "observer.hostname": "Watchers Accounting of Disclosures Application"}},
    # type rest + subtype create, action C, outcome 8 with outcomeDesc; entities are a
    # request detail and an OperationOutcome (neither a patient nor a study).
    "auditevent-example-error.json": {
        "action": "other", "outcome": "failure", "user": "95", "ip": None, "studies": None,
        "also": {"event.severity_name": "serious",
              "event.reason": "Invalid request to create an Operation resource on the Patient endpoint."}},
    # type 110100 Application Activity (110120 start); no agent is requestor: the human
    # user agent "Grahame" (network 127.0.0.1 type 2) is the actor; observer display
    # "Grahame's Laptop".
    "auditevent-example.json": {
        "action": "config-change", "outcome": "success", "user": "Grahame", "ip": "127.0.0.1", "studies": None,
        "also": {"event.code": "110100", "observer.hostname": "Grahame's Laptop",
              "user.roles": ["Service User (Logon)"]}},
}

# Patient ids and names taken from the samples' patient entities (and the
# patient searched in the pixQuery's HL7v3 query); none may reach the index.
PHI = {
    "audit-event-example-media.json": ["e3cdfc81a0d24bd^^^&2.16.840.1.113883.4.2&ISO", "e3cdfc81a0d24bd"],
    "audit-event-example-pixQuery.json": ["e3cdfc81a0d24bd^^^&2.16.840.1.113883.4.2&ISO", "e3cdfc81a0d24bd",
                                          "SuryaBrand"],
    "audit-event-example-vread.json": ["Patient/example"],
    "auditevent-example-disclosure.json": ["Patient/example", "Namne of What", "What.id"],
}


# Our own inputs: patient ids and names they carry; none may reach the index.
OWN_PHI = {
    "export-to-media.json": ["MRN-55012", "MORENO^LUCIA", "MORENO"],
    "pix-query.json": ["MRN-55012", "MORENO"],
    "rest-vread-patient.json": ["Patient/pat-8812", "pat-8812"],
    "disclosure-to-host.json": ["pat-8812", "Lucia Moreno"],
    "rest-read-imaging-study.json": ["pat-8812", "Lucia Moreno", "Moreno"],
}


def sample_text(name: str) -> str:
    return (FHIR_DIR / name).read_text()


def sample_json(name: str) -> dict[str, Any]:
    return json.loads(sample_text(name))


def own_text(name: str) -> str:
    return (OWN / name).read_text()


def own_json(name: str) -> dict[str, Any]:
    return json.loads(own_text(name))


def failures_index(golden_pack: Any) -> str:
    return golden_pack.index("failures")


def events_index(golden_pack: Any) -> str:
    return golden_pack.index("events_data_stream")


@corpus.needs("fhir-auditevent")
def test_every_sample_is_covered() -> None:
    assert {p.name for p in FHIR_DIR.iterdir()} == set(EXPECTED) | {XML_SAMPLE}


@corpus.needs("fhir-auditevent")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_maps(simulate: Any, golden_pack: Any, name: str) -> None:
    want = EXPECTED[name]
    out = simulate(sample_text(name))
    doc = out["doc"]
    assert out["index"] == events_index(golden_pack), doc.get("error")
    assert get_path(doc, "event.action") == want["action"]
    assert get_path(doc, "event.outcome") == want["outcome"]
    assert get_path(doc, "user.name") == want["user"]
    assert get_path(doc, "source.ip") == want["ip"]
    assert get_path(doc, "pacs.study.count") == want["studies"]
    for path, value in want["also"].items():
        assert get_path(doc, path) == value, path
    assert get_path(doc, "event.provider") == "fhir"
    assert get_path(doc, "observer.product") == "fhir"
    assert get_path(doc, "pacs.source_format") == "fhir"
    assert get_path(doc, "event.original")  # kept, redacted
    assert "_pg" not in doc and "message" not in doc


@pytest.mark.parametrize(("text", "utc"), [
    pytest.param(lambda: own_text("login.json"), "2026-03-02T06:58:41.000Z", id="own:login.json"),  # +01:00
    pytest.param(lambda: sample_text("auditevent-example.json"), "2012-10-25T11:04:27.000Z",  # +11:00
                 id="corpus:auditevent-example.json", marks=corpus.needs("fhir-auditevent")),
])
def test_timestamp_is_recorded_in_utc(simulate: Any, text: Any, utc: str) -> None:
    assert simulate(text())["doc"]["@timestamp"] == utc


@pytest.mark.parametrize(("text", "agents"), [
    pytest.param(lambda: own_text("disclosure-to-host.json"), {"records.office@north.example", "Insurer Claims Desk"},
                 id="own:disclosure-to-host.json"),
    pytest.param(lambda: sample_text("auditevent-example-disclosure.json"), {"SomeIdiot@nowhere", "Where"},
                 id="corpus:auditevent-example-disclosure.json", marks=corpus.needs("fhir-auditevent")),
])
def test_all_agents_are_related_users(simulate: Any, text: Any, agents: set[str]) -> None:
    assert set(get_path(simulate(text())["doc"], "related.user")) >= agents


def assert_no_patient_stored(doc: dict[str, Any], values: list[str]) -> None:
    stored = json.dumps(doc, ensure_ascii=False)
    for value in values:
        assert value not in stored, value
    # the id is pseudonymized, not lost
    assert len(get_path(doc, "pacs.patient.id_hash")) == 64
    assert get_path(doc, "pacs.patient.id") is None
    assert get_path(doc, "pacs.patient.name") is None


@pytest.mark.parametrize("name", sorted(OWN_PHI))
def test_no_patient_id_or_name_of_own_inputs_is_stored(simulate: Any, name: str) -> None:
    assert_no_patient_stored(simulate(own_text(name))["doc"], OWN_PHI[name])


@corpus.needs("fhir-auditevent")
@pytest.mark.parametrize("name", sorted(PHI))
def test_no_patient_id_or_name_is_stored(simulate: Any, name: str) -> None:
    assert_no_patient_stored(simulate(sample_text(name))["doc"], PHI[name])


@pytest.mark.parametrize(("texts"), [
    pytest.param(lambda: (own_text("export-to-media.json"), own_text("pix-query.json")), id="own"),
    pytest.param(lambda: (sample_text("audit-event-example-media.json"), sample_text("audit-event-example-pixQuery.json")),
                 id="corpus", marks=corpus.needs("fhir-auditevent")),
])
def test_same_patient_same_hash(simulate: Any, texts: Any) -> None:
    media, pix = (simulate(t)["doc"] for t in texts())
    assert get_path(media, "pacs.patient.id_hash") == get_path(pix, "pacs.patient.id_hash")


@pytest.mark.parametrize(("text", "patient"), [
    pytest.param(lambda: own_text("pix-query.json"), "MRN-55012", id="own:pix-query.json"),
    pytest.param(lambda: sample_text("audit-event-example-pixQuery.json"), "SuryaBrand",
                 id="corpus:audit-event-example-pixQuery.json", marks=corpus.needs("fhir-auditevent")),
])
def test_pix_query_is_decoded_and_masked(simulate: Any, text: Any, patient: str) -> None:
    query = get_path(simulate(text())["doc"], "pacs.query")
    assert query.startswith("<?xml")
    assert "<patientIdentifier>[REDACTED]</patientIdentifier>" in query
    assert patient not in query


@pytest.mark.parametrize(("event", "patient"), [
    pytest.param(lambda: own_json("disclosure-to-host.json"), ["pat-8812", "Lucia Moreno"], id="own"),
    pytest.param(lambda: sample_json("auditevent-example-disclosure.json"), ["Patient/example", "Namne of What"],
                 id="corpus", marks=corpus.needs("fhir-auditevent")),
])
def test_structured_document_maps_too(simulate: Any, golden_pack: Any, event: Any, patient: list[str]) -> None:
    # A shipper may send the AuditEvent as the document itself instead of `message`.
    out = simulate(event())
    assert out["index"] == events_index(golden_pack)
    assert get_path(out["doc"], "event.action") == "study-export"
    stored = json.dumps(out["doc"], ensure_ascii=False)
    assert all(value not in stored for value in patient)


@pytest.mark.parametrize("text", [
    pytest.param(lambda: own_text("breakglass-r5.xml"), id="own:breakglass-r5.xml"),
    pytest.param(lambda: sample_text(XML_SAMPLE), id=f"corpus:{XML_SAMPLE}", marks=corpus.needs("fhir-auditevent")),
])
def test_r5_xml_goes_to_failure_index(simulate: Any, golden_pack: Any, text: Any) -> None:
    # OpenSearch has no XML processor: FHIR XML cannot be parsed by a pipeline.
    xml = text()
    out = simulate(xml)
    doc = out["doc"]
    assert out["index"] == failures_index(golden_pack)
    message = get_path(doc, "error.message")
    assert "FHIR AuditEvent in XML is not supported: send FHIR JSON" in message, message
    assert get_path(doc, "event.original") is None  # issue 9: a fingerprint, never the text
    assert get_path(doc, "event.original_sha256") == hashlib.sha256(xml.encode()).hexdigest()


# -- Bundles -------------------------------------------------------------------


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{i}", "resource": r} for i, r in enumerate(resources)]}


def test_bundle_with_one_audit_event_maps(simulate: Any, golden_pack: Any) -> None:
    out = simulate(json.dumps(bundle(own_json("login.json"))))
    assert out["index"] == events_index(golden_pack)
    assert get_path(out["doc"], "event.action") == "user-login"
    assert get_path(out["doc"], "user.name") == "u-2041"
    assert get_path(out["doc"], "source.ip") == "198.51.100.23"


def test_bundle_with_two_audit_events_fails_clearly(simulate: Any, golden_pack: Any) -> None:
    text = json.dumps(bundle(own_json("login.json"), own_json("logout.json")))
    out = simulate(text)
    assert out["index"] == failures_index(golden_pack)
    message = get_path(out["doc"], "error.message")
    assert "Bundle with 2 AuditEvents: send entries one by one" in message
    assert "splits Bundles" in message
    assert get_path(out["doc"], "event.original_sha256") == hashlib.sha256(text.encode()).hexdigest()


def test_bundle_without_audit_event_fails(simulate: Any, golden_pack: Any) -> None:
    out = simulate(json.dumps(bundle({"resourceType": "Observation", "id": "o1", "status": "final"})))
    assert out["index"] == failures_index(golden_pack)
    assert "no AuditEvent" in get_path(out["doc"], "error.message")


# -- not an AuditEvent, wrong types, missing fields ----------------------------

PATIENT_RESOURCE = {"resourceType": "Patient", "id": "pat-1",
                    "name": [{"family": "Chalmers", "given": ["Peter", "James"]}], "birthDate": "1974-12-25"}


def test_fhir_patient_resource_goes_to_failure_index(simulate: Any, golden_pack: Any) -> None:
    out = simulate(json.dumps(PATIENT_RESOURCE))
    assert out["index"] == failures_index(golden_pack)
    assert get_path(out["doc"], "error.message")
    assert get_path(out["doc"], "event.original") is None  # a Patient resource: PHI, never kept in clear
    assert get_path(out["doc"], "event.original_sha256") == hashlib.sha256(
        json.dumps(PATIENT_RESOURCE).encode()).hexdigest()


def test_fhir_patient_resource_forced_to_fhir_fails_clearly(simulate: Any, golden_pack: Any) -> None:
    # A sender's pacsguard_format no longer picks the pipeline (issue 9, item 7): the router decides.
    out = simulate(json.dumps(dict(PATIENT_RESOURCE, pacsguard_format="fhir")))
    assert out["index"] == failures_index(golden_pack)
    assert "unrecognised event format" in get_path(out["doc"], "error.message")


def login_with(**changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(own_json("login.json"))
    for key, value in changes.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def test_missing_recorded_goes_to_failure_index(simulate: Any, golden_pack: Any) -> None:
    out = simulate(json.dumps(login_with(recorded=None)))
    assert out["index"] == failures_index(golden_pack)
    assert "timestamp" in get_path(out["doc"], "error.message")


@pytest.mark.parametrize("recorded", [12345, {"x": 1}, "yesterday"])
def test_nonsense_recorded_goes_to_failure_index(simulate: Any, golden_pack: Any, recorded: Any) -> None:
    out = simulate(json.dumps(login_with(recorded=recorded)))
    assert out["index"] == failures_index(golden_pack)
    assert "timestamp" in get_path(out["doc"], "error.message")


def test_outcome_of_wrong_type_is_indexed_partial(simulate: Any, golden_pack: Any) -> None:
    # Issue 10: the rest of the event is usable; the outcome is unknown and the problem named.
    out = simulate(json.dumps(login_with(outcome={"x": 1})))
    assert out["index"] == golden_pack.index("events_data_stream")
    assert get_path(out["doc"], "tags") == ["pacsguard-partial"]
    assert "AuditEvent.outcome" in get_path(out["doc"], "error.message")
    assert get_path(out["doc"], "event.outcome") == "unknown"


def test_r5_style_outcome_is_handled(simulate: Any, golden_pack: Any) -> None:
    outcome = {"code": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-outcome", "code": "4"},
               "detail": [{"text": "wrong password"}]}
    out = simulate(json.dumps(login_with(outcome=outcome)))
    assert out["index"] == events_index(golden_pack)
    assert get_path(out["doc"], "event.outcome") == "failure"
    assert get_path(out["doc"], "event.severity_name") == "minor"
    assert get_path(out["doc"], "event.reason") == "wrong password"


def test_missing_outcome_is_unknown(simulate: Any) -> None:
    doc = simulate(json.dumps(login_with(outcome=None)))["doc"]
    assert get_path(doc, "event.outcome") == "unknown"


def test_unknown_codes_give_other(simulate: Any, golden_pack: Any) -> None:
    event = login_with(type={"system": "urn:example", "code": "no-such-code"},
                       subtype=[{"system": "urn:example", "code": "nope"}])
    out = simulate(json.dumps(event))
    assert out["index"] == events_index(golden_pack)
    assert get_path(out["doc"], "event.action") == "other"
    assert get_path(out["doc"], "event.code") == "no-such-code"


def test_agent_network_host_name_is_an_address(simulate: Any) -> None:
    event = login_with()
    event["agent"][0]["network"] = {"address": "ws-12.radiology.example", "type": "1"}
    doc = simulate(json.dumps(event))["doc"]
    assert get_path(doc, "source.ip") is None
    assert get_path(doc, "source.address") == "ws-12.radiology.example"


def test_agent_network_ip_without_type_is_an_ip(simulate: Any) -> None:
    event = login_with()
    event["agent"][0]["network"] = {"address": "2001:db8::42"}
    doc = simulate(json.dumps(event))["doc"]
    assert get_path(doc, "source.ip") == "2001:db8::42"


# -- an imaging (BALP-style) event with studies and a named patient --------------

STUDY_UID_1 = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012"
STUDY_UID_2 = "1.2.826.0.1.3680043.8.498.98765432109876543210987654321098"


def imaging_read() -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "action": "R",
        "recorded": "2025-03-14T09:00:00.000+01:00",
        "outcome": "0",
        "agent": [
            {"type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153"}]},
             "who": {"display": "viewer-app"}, "requestor": False},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                                  "code": "humanuser"}]},
             "who": {"identifier": {"value": "u-77"}, "display": "dr.house"}, "requestor": True,
             "network": {"address": "192.0.2.44", "type": "2"}},
        ],
        "source": {"observer": {"display": "pacs-fhir-01"}},
        "entity": [
            {"what": {"reference": "Patient/p-5521", "display": "Peter James Chalmers"},
             "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
             "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}},
            {"what": {"reference": "ImagingStudy/is-1",
                      "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID_1}"}}},
            {"what": {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID_2}"}}},
            {"what": {"reference": f"ImagingStudy/{STUDY_UID_1}"}},
        ],
    }


def test_imaging_read_maps_studies_and_hides_the_patient(simulate: Any, golden_pack: Any) -> None:
    out = simulate(json.dumps(imaging_read()))
    doc = out["doc"]
    assert out["index"] == events_index(golden_pack)
    assert get_path(doc, "event.action") == "study-view"
    assert get_path(doc, "user.name") == "dr.house"
    assert get_path(doc, "user.id") == "u-77"
    assert get_path(doc, "source.ip") == "192.0.2.44"
    assert get_path(doc, "pacs.study.uids") == [STUDY_UID_1, STUDY_UID_2]
    assert get_path(doc, "pacs.study.count") == 2
    assert doc["@timestamp"] == "2025-03-14T08:00:00.000Z"
    stored = json.dumps(doc)
    for value in ("p-5521", "Peter James Chalmers", "Chalmers", "Peter"):
        assert value not in stored, value
    assert len(get_path(doc, "pacs.patient.id_hash")) == 64


def test_patient_search_query_is_masked(simulate: Any) -> None:
    event = imaging_read()
    event["subtype"] = [{"system": "http://hl7.org/fhir/restful-interaction", "code": "search-type"}]
    url = "https://pacs.example.org/fhir/Patient?family=chalmers&birthdate=1974-12-25&_count=10"
    event["entity"] = [{"type": {"code": "2"}, "role": {"code": "24"},
                        "query": base64.b64encode(url.encode()).decode()}]
    doc = simulate(json.dumps(event))["doc"]
    assert get_path(doc, "event.action") == "study-query"
    assert get_path(doc, "pacs.query") == \
        "https://pacs.example.org/fhir/Patient?family=[REDACTED]&birthdate=[REDACTED]&_count=10"


@pytest.mark.parametrize(("subtype", "entities", "action"), [
    ("create", "study", "study-import"),
    ("delete", "study", "study-delete"),
    ("update", "patient", "patient-record"),
    ("history-instance", "study", "study-query"),
    ("capabilities", "none", "other"),
])
def test_rest_interactions(simulate: Any, subtype: str, entities: str, action: str) -> None:
    event = imaging_read()
    event["subtype"] = [{"system": "http://hl7.org/fhir/restful-interaction", "code": subtype}]
    if entities == "study":
        event["entity"] = event["entity"][1:2]
    elif entities == "patient":
        event["entity"] = event["entity"][0:1]
    else:
        event["entity"] = []
    assert get_path(simulate(json.dumps(event))["doc"], "event.action") == action


@pytest.mark.parametrize(("type_code", "subtypes", "action_code", "action"), [
    ("110110", [], "U", "patient-record"),
    ("110100", ["110120"], "E", "config-change"),
    ("110113", ["110136"], "E", "role-grant"),
    ("110113", ["110127"], "E", "security-alert"),
    ("110114", ["110122"], "E", "user-login"),
    ("110114", [], "E", "other"),
    ("110105", [], "D", "study-delete"),
    ("110103", [], "R", "study-view"),
    ("110104", [], "C", "study-import"),
])
def test_dicom_event_codes(simulate: Any, type_code: str, subtypes: list[str], action_code: str,
                           action: str) -> None:
    event = imaging_read()
    event["type"] = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": type_code}
    event["subtype"] = [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": c} for c in subtypes]
    event["action"] = action_code
    doc = simulate(json.dumps(event))["doc"]
    assert get_path(doc, "event.action") == action
    assert get_path(doc, "event.code") == type_code


def test_instances_transferred_to_a_remote_destination_is_an_export(simulate: Any) -> None:
    event = imaging_read()
    event["type"] = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110104"}
    event["subtype"] = []
    event["agent"].append({"type": {"coding": [{"code": "110152"}]}, "who": {"display": "RESEARCH_AE"},
                           "requestor": False, "network": {"address": "research.example.org", "type": "1"}})
    doc = simulate(json.dumps(event))["doc"]
    assert get_path(doc, "event.action") == "study-export"
    assert get_path(doc, "pacs.export.destination") == "research.example.org"
    assert get_path(doc, "pacs.study.count") == 2


def test_contained_observer_device_names_the_product(simulate: Any) -> None:
    event = imaging_read()
    event["contained"] = [{"resourceType": "Device", "id": "dev", "manufacturer": "Example Imaging",
                           "deviceName": [{"name": "ExamplePACS", "type": "model-name"}]}]
    event["source"] = {"observer": {"reference": "#dev"}, "site": "site-a"}
    doc = simulate(json.dumps(event))["doc"]
    assert get_path(doc, "observer.product") == "ExamplePACS"
    assert get_path(doc, "observer.vendor") == "Example Imaging"
    assert get_path(doc, "observer.hostname") == "site-a"

