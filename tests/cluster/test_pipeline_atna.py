"""DICOM/IHE ATNA end to end through the real node, beyond the golden files: the public samples
(../shared/samples, skipped with the reason where absent), each converted by the collector's
frame conversion (syslog framing, XML parse, patient redaction, envelope) and run through the
installed router with _simulate, checked against tests/corpus_tables/atna_expected.yaml (written
by reading the samples); and for our own inputs and the samples alike, the PHI rule: no patient
id or patient name of the message appears anywhere in the stored document.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import corpus
import pytest
import yaml
from documents import get_path
from pacsguard.collector.syslog_input import convert_frame

REPO = Path(__file__).resolve().parents[2]
GOLDEN: dict[str, dict[str, Any]] = yaml.safe_load(
    (REPO / "tests" / "corpus_tables" / "atna_expected.yaml").read_text())
ATNA = corpus.folder("dicom-audit")
OWN = REPO / "pipelines" / "atna" / "_dev" / "test" / "pipeline"
OWN_INPUTS = sorted(p.name for p in OWN.iterdir() if p.suffix in (".xml", ".syslog"))
PATIENT_ID_TYPES = {"2"}


def patient_values(xml: bytes) -> set[str]:
    """Patient ids and name parts a message carries (ParticipantObjectIDTypeCode 2 / role 1)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return set()
    values: set[str] = set()
    for obj in root.iter("ParticipantObjectIdentification"):
        code = obj.find("ParticipantObjectIDTypeCode")
        type_code = code.get("csd-code") or code.get("code") if code is not None else None
        if type_code in PATIENT_ID_TYPES or obj.get("ParticipantObjectTypeCodeRole") == "1":
            pid = obj.get("ParticipantObjectID")
            if pid and pid != "<none>" and len(pid) >= 4:
                values.add(pid.split("^")[0])
            name = obj.findtext("ParticipantObjectName") or ""
            values.update(part for part in name.replace("^", " ").split() if len(part) >= 4)
    return values


def message_xml(name: str, raw: bytes) -> bytes:
    """The XML of an input: the file, or what follows the header of a syslog frame."""
    return raw[raw.find(b"<", 1):] if name.endswith(".syslog") else raw


def through_pipeline(raw: bytes, simulate: Any) -> dict[str, Any]:
    converted = convert_frame(raw, max_bytes=1 << 20, strict=False)
    out: dict[str, Any] = simulate(converted.message)
    return out


def assert_no_patient_value_stored(name: str, raw: bytes, doc: dict[str, Any]) -> int:
    stored = json.dumps(doc, ensure_ascii=False)
    values = patient_values(message_xml(name, raw))
    for value in values:
        assert value not in stored, f"{name}: patient value {value!r} reached the index"
    return len(values)


@pytest.mark.parametrize("name", OWN_INPUTS)
def test_own_input_stores_no_patient_data(name: str, simulate: Any) -> None:
    raw = (OWN / name).read_bytes()
    assert_no_patient_value_stored(name, raw, through_pipeline(raw, simulate)["doc"])


def test_own_inputs_do_name_patients() -> None:
    """The test above can only fail if the inputs name patients: most do."""
    named = [n for n in OWN_INPUTS if patient_values(message_xml(n, (OWN / n).read_bytes()))]
    assert len(named) >= 15


@corpus.needs("dicom-audit")
def test_every_sample_has_an_expectation() -> None:
    assert set(corpus.names("dicom-audit")) == set(GOLDEN)


@pytest.mark.parametrize("name", corpus.files("dicom-audit"))
def test_sample_through_pipeline(name: str, simulate: Any, golden_pack: Any) -> None:
    raw = (ATNA / name).read_bytes()
    out = through_pipeline(raw, simulate)
    doc = out["doc"]
    expected = GOLDEN[name]
    if "error" in expected:
        assert out["index"] == golden_pack.index("failures")
        assert expected["error"] in get_path(doc, "error.message")
        # No original text in the failure index (issue 9): its fingerprint; the collector seals the text.
        assert get_path(doc, "event.original") is None and get_path(doc, "event.original_sha256")
    else:
        assert out["index"] == golden_pack.index("events_data_stream"), get_path(doc, "error.message")
        assert get_path(doc, "event.action") == expected["action"]
        assert get_path(doc, "event.outcome") == expected["outcome"]
        assert get_path(doc, "user.name") == expected["user_name"]
        assert get_path(doc, "source.ip") == expected["source_ip"]
        assert get_path(doc, "pacs.study.count") == expected["study_count"]
        assert get_path(doc, "pacs.source_format") == "atna"
        assert get_path(doc, "event.category")  # enrich ran
    assert_no_patient_value_stored(name, raw, doc)
