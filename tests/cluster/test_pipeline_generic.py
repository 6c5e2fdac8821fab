"""The generic JSON pipeline through the real node (router -> generic -> enrich), beyond the golden files.

The documented examples of docs/generic-json.md are golden inputs in
pipelines/generic/_dev/test/pipeline; a test keeps the two in sync.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from documents import get_path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "pipelines" / "generic" / "_dev" / "test" / "pipeline"
DOC = ROOT / "docs" / "generic-json.md"

# file -> dotted field -> expected value in the stored event
EXPECTED: dict[str, dict[str, Any]] = {
    "login-success": {
        "event.action": "user-login", "event.outcome": "success", "event.id": "evt-0001",
        "event.category": ["authentication"], "@timestamp": "2025-03-14T07:58:12.000Z",
        "user.name": "alice.martin@hospital.example", "user.id": "u-1001", "user.roles": ["radiologist"],
        "user.domain": "hospital", "source.ip": "198.51.100.7", "session.id": "sess-9f2c41",
        "user_agent.name": "Safari", "observer.product": "cloudviewer", "observer.vendor": "Example Imaging",
        "observer.hostname": "viewer-01.example.org"},
    "login-failure": {
        "event.action": "user-login", "event.outcome": "failure", "event.reason": "invalid_password",
        "user.name": "alice.martin@hospital.example", "source.ip": "203.0.113.50"},
    "share-create": {
        "event.action": "share-create", "event.outcome": "success", "user.name": "alice.martin@hospital.example",
        "user.id": "u-1001", "pacs.study.count": 1, "pacs.share.id": "lnk-5c1e",
        "pacs.share.recipients": ["dr.lee@partner-clinic.example", "colleague@hospital.example"],
        "pacs.share.expires_at": "2025-03-21T09:05:00.000Z", "pacs.share.max_uses": 3,
        "pacs.share.external": True},
    "study-export": {
        "event.action": "study-export", "user.name": "bob.nguyen", "pacs.study.count": 2,
        "pacs.instance.count": 812, "pacs.export.destination": "REMOTE_AE@research-pacs.example.org"},
    "study-download": {
        "event.action": "study-download", "user.name": "bob.nguyen", "pacs.study.count": 1,
        "pacs.study.uids": ["1.2.826.0.1.3680043.8.498.44444444444444444444444444444444"],
        "pacs.instance.count": 230},
    "role-grant": {
        "event.action": "role-grant", "event.category": ["iam"], "user.name": "admin.carla",
        "user.target.name": "bob.nguyen", "user.changes.roles": ["pacs-admin"]},
    "user-create": {
        "event.action": "user-create", "event.type": ["user", "creation"], "user.name": "admin.carla",
        "user.target.name": "temp.contractor"},
}


def example(name: str) -> str:
    return (GOLDEN / f"{name}.json").read_text()


def test_every_documented_example_is_covered() -> None:
    assert {p.stem for p in GOLDEN.glob("*.json") if not p.name.endswith("-expected.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_maps(simulate: Any, golden_pack: Any, name: str) -> None:
    out = simulate(example(name))
    doc = out["doc"]
    assert out["index"] == golden_pack.index("events_data_stream"), doc.get("error")
    assert get_path(doc, "pacs.source_format") == "generic"
    for path, value in EXPECTED[name].items():
        got = doc.get(path) if path.startswith("@") else get_path(doc, path)
        assert got == value, path


def test_patient_id_is_hashed_and_redacted(simulate: Any) -> None:
    doc = simulate(example("share-create"))["doc"]
    assert "MRN-0042317" not in json.dumps(doc)
    assert len(get_path(doc, "pacs.patient.id_hash")) == 64


def test_structured_document_maps_too(simulate: Any, golden_pack: Any) -> None:
    out = simulate(json.loads(example("login-failure")))
    assert out["index"] == golden_pack.index("events_data_stream")
    assert get_path(out["doc"], "event.outcome") == "failure"


def test_unknown_action_goes_to_failure_index(simulate: Any, golden_pack: Any) -> None:
    event = json.loads(example("login-success"))
    event["action"] = "login"
    out = simulate(json.dumps(event))
    assert out["index"] == golden_pack.index("failures")
    assert "vocabulary" in get_path(out["doc"], "error.message")


def test_missing_timestamp_goes_to_failure_index(simulate: Any, golden_pack: Any) -> None:
    event = json.loads(example("login-success"))
    del event["timestamp"]
    out = simulate(json.dumps(event))
    assert out["index"] == golden_pack.index("failures")
    assert "timestamp" in get_path(out["doc"], "error.message")


def test_documented_examples_are_the_golden_files() -> None:
    """Every ```json block under an `Example:` line in the doc equals its golden file."""
    text = DOC.read_text()
    blocks = re.findall(r"Example `pipelines/generic/_dev/test/pipeline/([\w-]+)\.json`:\s*```json\n(.*?)```",
                        text, re.DOTALL)
    assert {name for name, _ in blocks} == set(EXPECTED)
    for name, body in blocks:
        assert json.loads(body) == json.loads(example(name)), name
