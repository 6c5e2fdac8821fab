"""Golden tests of pipelines/orthanc.yaml through the real node (router -> orthanc -> enrich).

The rows in tests/golden/orthanc are SYNTHETIC (no public sample of an Orthanc
audit-log row exists; see tests/golden/orthanc/README.md). Each row is sent as
a message string, like a shipper would.
"""

from __future__ import annotations

import hashlib

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import get_path

pytestmark = pytest.mark.cluster

GOLDEN = Path(__file__).resolve().parent / "golden" / "orthanc"
STUDY = "8a8cf898-ca27f490-d0c7058c-929d0581-2bbf104d"
STUDY2 = "27f7126f-4f66fb14-03f4081b-f9341db2-53925988"
STUDY_UID = "1.2.826.0.1.3680043.8.498.10449417357165217316432874622012345"
USER_ID = "3f1c6a52-9b0e-4a53-bf0e-2f7d6f9a1c11"

# file -> (event.action, pacs.study.uids, extra dotted fields)
EXPECTED: dict[str, tuple[str, list[str] | None, dict[str, Any]]] = {
    "download-study": ("study-download", [STUDY], {"@timestamp": "2025-03-14T09:12:45.123Z"}),
    # PostgreSQL-style time stamp "2025-03-14 09:20:01.512+00"; the log data is the instance id
    "uploaded-instance": ("study-import", [STUDY2], {"@timestamp": "2025-03-14T09:20:01.512Z",
                                                     "pacs.instance.count": 1}),
    # Orthanc basic time stamp "20250314T093000", no zone: UTC
    "deleted-study": ("study-delete", [STUDY], {"@timestamp": "2025-03-14T09:30:00.000Z"}),
    "deleted-patient": ("patient-record", None, {}),
    "deleted-parent-patient": ("study-delete", [STUDY2], {}),
    "deleted-series": ("other", None, {}),
    "deleted-child-series": ("study-delete", [STUDY], {}),
    # the study's DICOM UID is in TagsBeforeModification
    "start-modification-job": ("other", [STUDY_UID], {}),
    "start-modification-job-base64": ("other", [STUDY_UID], {}),
    "success-modification-job": ("other", [STUDY], {}),
    "start-anonymization-job": ("other", [STUDY2], {}),
    "new-study-from-anonymization-job": ("other", ["0b5e4a3c-7d8e9f10-21324354-65768798-a9bacbdc"], {}),
    "added-label": ("other", [STUDY], {}),
    "user-login": ("user-login", None, {"source.ip": "203.0.113.24", "user_agent.name": "Chrome"}),
    "create-share": ("share-create", [STUDY_UID], {
        "pacs.share.id": "share-7f3a9c",
        "pacs.share.recipients": ["j.dupont@gmail.com", "radiologie@hopital-exemple.fr"],
        "pacs.share.expires_at": "2025-03-21T11:00:00.000Z",
        "pacs.share.max_uses": 5,
        "pacs.share.external": True}),
    # UserName null -> user.name is the UserId; expiry = Timestamp + ValidityDuration (1 day)
    "share-validity-duration": ("share-create", [STUDY2], {
        "user.name": USER_ID,
        "pacs.share.recipients": ["partner@clinique-partenaire.fr"],
        "pacs.share.expires_at": "2025-03-15T11:05:00.000Z"}),
    "unknown-action": ("other", [STUDY], {}),
}


def row_text(name: str) -> str:
    return (GOLDEN / f"{name}.json").read_text()


def test_every_golden_row_is_covered() -> None:
    assert {p.stem for p in GOLDEN.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_row_maps(simulate: Any, golden_pack: Any, name: str) -> None:
    action, uids, also = EXPECTED[name]
    row = json.loads(row_text(name))
    out = simulate(row_text(name))
    doc = out["doc"]
    assert out["index"] == golden_pack.index("events_data_stream"), doc.get("error")
    assert get_path(doc, "event.action") == action
    assert get_path(doc, "event.code") == row["Action"]
    assert get_path(doc, "event.outcome") == "success"
    assert get_path(doc, "event.provider") == "authorization"
    assert get_path(doc, "observer.product") == "orthanc"
    assert get_path(doc, "pacs.source_format") == "orthanc"
    assert get_path(doc, "user.id") == USER_ID
    if "user.name" not in also:
        assert get_path(doc, "user.name") == row["UserName"]
    assert get_path(doc, "pacs.study.uids") == uids
    assert get_path(doc, "pacs.study.count") == (len(uids) if uids else None)
    for path, value in also.items():
        got = doc.get(path) if path.startswith("@") else get_path(doc, path)
        assert got == value, path


@pytest.mark.parametrize("name", ["start-modification-job", "start-modification-job-base64"])
def test_patient_tags_of_a_modification_never_reach_the_index(simulate: Any, name: str) -> None:
    doc = simulate(row_text(name))["doc"]
    stored = json.dumps(doc)
    decoded = base64.b64decode(json.loads(doc["event"]["original"]).get("Base64LogData") or "").decode()
    for value in ("DUPONT^JEANNE", "DUPONT", "JEANNE", "PAT-778812", "19580317"):
        assert value not in stored, value
        assert value not in decoded, value
    assert len(get_path(doc, "pacs.patient.id_hash")) == 64
    # what is not patient data stays readable
    assert "CT THORAX SANS INJECTION" in (decoded or stored)


def test_same_patient_same_hash_in_both_log_data_formats(simulate: Any) -> None:
    a = simulate(row_text("start-modification-job"))["doc"]
    b = simulate(row_text("start-modification-job-base64"))["doc"]
    assert get_path(a, "pacs.patient.id_hash") == get_path(b, "pacs.patient.id_hash")


def test_patient_level_row_hashes_the_orthanc_patient_id(simulate: Any) -> None:
    doc = simulate(row_text("deleted-patient"))["doc"]
    assert "da39a3ee-5e6b4b0d-3255bfef-95601890-afd80709" not in json.dumps(doc)
    assert len(get_path(doc, "pacs.patient.id_hash")) == 64


def test_share_secrets_never_reach_the_index(simulate: Any) -> None:
    doc = simulate(row_text("create-share"))["doc"]
    stored = json.dumps(doc)
    assert "eyJhbGciOiJIUzI1NiJ9" not in stored
    assert "[secret-redacted]" in doc["event"]["original"]


def test_structured_row_maps_too(simulate: Any, golden_pack: Any) -> None:
    out = simulate(json.loads(row_text("download-study")))
    assert out["index"] == golden_pack.index("events_data_stream")
    assert get_path(out["doc"], "event.action") == "study-download"


def test_row_without_timestamp_goes_to_failure_index(simulate: Any, golden_pack: Any) -> None:
    row = json.loads(row_text("download-study"))
    del row["Timestamp"]
    out = simulate(json.dumps(row))
    assert out["index"] == golden_pack.index("failures")
    assert "timestamp" in get_path(out["doc"], "error.message").lower()


def test_row_with_garbage_timestamp_goes_to_failure_index(simulate: Any, golden_pack: Any) -> None:
    row = json.loads(row_text("download-study"))
    row["Timestamp"] = "last tuesday"
    out = simulate(json.dumps(row))
    assert out["index"] == golden_pack.index("failures")
    assert get_path(out["doc"], "event.original_sha256") == hashlib.sha256(json.dumps(row).encode()).hexdigest()


def test_epoch_timestamp(simulate: Any) -> None:
    row = json.loads(row_text("download-study"))
    row["Timestamp"] = 1741943565
    assert simulate(json.dumps(row))["doc"]["@timestamp"] == "2025-03-14T09:12:45.000Z"
