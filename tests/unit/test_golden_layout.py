"""The golden-test files beside the pipelines (layout: tests/golden.py), checked without a node:
every source the router knows has its own inputs, every input has a readable expected file with
one document per event, configs hold only known keys, and no input is a copy of the public corpus.
(The inputs through the node: tests/cluster/test_pipeline_golden.py.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import corpus
import golden
import pytest
from pacsguard.core.settings import load_settings
from pacsguard.core.vocabulary import vocabulary
from pacsguard.services.install import load_objects

INPUTS = golden.all_inputs()
IDS = [golden.rel(p).removeprefix("pipelines/") for p in INPUTS]


def router_formats() -> list[str]:
    """The source formats the router hands events to (its detect_format step)."""
    settings = load_settings(environ={})
    router = next(o for o in load_objects(settings, "s" * 32) if o.id == f"{settings.scope}-router")
    step = next(p["script"] for p in router.body["processors"] if p.get("script", {}).get("tag") == "detect_format")
    formats: list[str] = step["params"]["formats"]
    return formats


def test_every_source_of_the_vocabulary_has_a_folder_with_its_own_inputs() -> None:
    folders = {f.name: f for f in golden.pipeline_folders()}
    formats = vocabulary().formats
    assert set(formats) == {"atna", "fhir", "keycloak", "orthanc", "proxy", "generic"}
    assert router_formats() == formats  # the router hands events to exactly these
    for source in formats:
        assert source in folders, f"pipelines/{source}/pipeline.yaml is missing"
        assert len(golden.inputs(folders[source])) >= 5, f"pipelines/{source}: too few golden inputs"


def test_the_router_has_inputs_for_what_it_refuses() -> None:
    assert golden.inputs(golden.PIPELINES / "router")


@pytest.mark.parametrize("folder", golden.pipeline_folders(), ids=lambda f: f.name)
def test_no_stray_files_in_a_test_folder(folder: Path) -> None:
    assert golden.stray_files(folder) == []


@pytest.mark.parametrize("input_path", INPUTS, ids=IDS)
def test_input_has_an_expected_file_with_one_document_per_event(input_path: Path) -> None:
    events = golden.read_events(input_path, golden.config_for(input_path))
    assert events, f"{golden.rel(input_path)} holds no event"
    expected = golden.load_expected(input_path)
    assert len(expected) == len(events)
    for entry in expected:
        assert set(entry) == {"index", "doc"} and entry["index"] in ("events", "failures", golden.DROPPED)
        if entry["index"] == golden.DROPPED:
            assert entry["doc"] is None, "a dropped event has no document"
        elif entry["index"] == "events":
            assert entry["doc"]["event"]["original"], "a stored event keeps its original"
        else:
            # the failure index keeps the error and the original's fingerprint, not its text
            assert entry["doc"]["error"]["message"] and entry["doc"]["event"]["original_sha256"]


def test_the_inputs_cover_events_and_failures_for_every_source() -> None:
    for source in vocabulary().formats:
        indices = {e["index"] for p in golden.inputs(golden.PIPELINES / source) for e in golden.load_expected(p)}
        assert indices - {golden.DROPPED} == {"events", "failures"}, source


def test_expected_files_are_written_as_generate_writes_them() -> None:
    """Sorted keys, two-space indent, final newline: a hand edit that drifts shows in review."""
    for input_path in INPUTS:
        path = golden.expected_path(input_path)
        data = json.loads(path.read_text(encoding="utf-8"))
        assert path.read_text(encoding="utf-8") == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", \
            golden.rel(path)


def test_ingest_clock_fields_are_masked_and_everything_else_is_not() -> None:
    config = golden.config_for(INPUTS[0])
    doc = {"@timestamp": "2026-03-02T10:00:00.000Z", "event": {"ingested": "2026-03-02T10:00:01.123456789Z", "id": "x"}}
    event = golden.normalize({"index": "events", "doc": doc}, config)
    assert event["doc"] == {"@timestamp": "2026-03-02T10:00:00.000Z", "event": {"ingested": golden.DYNAMIC, "id": "x"}}
    failure = golden.normalize({"index": "failures", "doc": doc}, config)
    assert failure["doc"]["@timestamp"] == golden.DYNAMIC
    wrong = golden.normalize({"index": "events", "doc": {"event": {"ingested": "yesterday"}}}, config)
    assert wrong["doc"]["event"]["ingested"] == "yesterday"  # a bad value is shown, so the comparison fails


def test_a_config_with_an_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.log-config.yml"
    path.write_text("fields: {a: 1}\nas_docment: true\n")
    with pytest.raises(golden.GoldenError, match=r"x\.log-config\.yml: unknown key\(s\) \['as_docment'\]"):
        golden.Config().merged(path)


def test_differences_name_the_event_and_the_field() -> None:
    events = [golden.Event("line 2", {})]
    diffs = golden.differences(events, [{"index": "events", "doc": {"event": {"action": "user-login"}}}],
                               [{"index": "events", "doc": {"event": {"action": "user-logout"}}}])
    assert diffs == ['line 2: doc.event.action: expected "user-logout", got "user-login"']


@corpus.needs("dicom-audit")
def test_no_input_is_a_copy_of_the_public_corpus() -> None:
    """The corpus may not be copied into the repository: no input file equals a corpus file, and no
    line of a .log input (one event per line) equals a line of one. (Lines of XML and JSON files
    may: a code system URL or a DICOM code is the same line in everyone's messages.)"""
    def digest(data: bytes) -> str:
        return hashlib.sha256(data.strip()).hexdigest()

    theirs: set[str] = set()
    for path in corpus.SAMPLES.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            theirs.add(digest(data))
            theirs.update(digest(line) for line in data.splitlines() if len(line.strip()) > 40)
    assert len(theirs) > 500
    for path in INPUTS:
        data = path.read_bytes()
        ours = {digest(data)}
        if path.suffix == ".log":
            ours |= {digest(line) for line in data.splitlines() if len(line.strip()) > 40}
        assert not ours & theirs, f"{golden.rel(path)} copies the public corpus"
