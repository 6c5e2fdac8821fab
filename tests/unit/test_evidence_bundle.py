"""Evidence bundles (response/evidence.py) and `pacsguard respond verify`, without a cluster:
every way a byte can change is caught and named."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from pacsguard.cli import app
from pacsguard.response.evidence import BundleInvalid, verify_bundle, write_bundle
from typer.testing import CliRunner

EVENTS = [{"_id": f"e{i}", "@timestamp": f"2026-11-30T10:00:0{i}Z", "user": {"name": "dr.x"},
           "pacs": {"patient": {"id_hash": "ab" * 32}}} for i in range(5)]


def make(tmp_path: Path) -> Path:
    path = tmp_path / "b.zip"
    bundle = write_bundle(path, alert={"id": "pg-1", "state": "ACTIVE"},
                          rule={"id": "r", "signal": "1a", "version": 1, "content_hash": "h"},
                          query={"index": "logs", "query": {"match_all": {}}}, events=iter(EVENTS),
                          collected_at="2026-11-30T12:00:00Z", collected_by="ann")
    assert bundle.events == 5
    return path


def rewrite(src: Path, dst: Path, name: str, change: bytes, to: bytes) -> None:
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for info in a.infolist():
            data = a.read(info)
            b.writestr(info, data.replace(change, to, 1) if info.filename == name else data)


def test_a_bundle_verifies_and_is_reproducible(tmp_path: Path) -> None:
    path = make(tmp_path)
    result = verify_bundle(path)
    assert (result.alert_id, result.events, result.sidecar_checked) == ("pg-1", 5, True)
    first = path.read_bytes()
    (tmp_path / "again").mkdir()
    assert make(tmp_path / "again").read_bytes() == first  # same evidence, same bytes
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert set(manifest["files"]) == {"alert.json", "rule.json", "query.json", "events.ndjson"}
    assert manifest["collected_by"] == "ann" and manifest["query"]["index"] == "logs"


@pytest.mark.parametrize("name,change,to", [
    ("events.ndjson", b"dr.x", b"dr.y"),
    ("alert.json", b"ACTIVE", b"ACTIVF"),
    ("rule.json", b"1a", b"1b"),
    ("manifest.json", b"ann", b"bob"),
])
def test_a_changed_file_is_named(tmp_path: Path, name: str, change: bytes, to: bytes) -> None:
    path = make(tmp_path)
    bad = tmp_path / "bad.zip"
    rewrite(path, bad, name, change, to)
    with pytest.raises(BundleInvalid, match=f"{name} was changed"):
        verify_bundle(bad)


def test_every_single_byte_flip_fails(tmp_path: Path) -> None:
    path = make(tmp_path)
    raw = path.read_bytes()
    side = (tmp_path / "b.zip.sha256").read_text()
    for offset in range(0, len(raw), max(1, len(raw) // 97)):
        flipped = bytearray(raw)
        flipped[offset] ^= 0x20
        bad = tmp_path / "f.zip"
        bad.write_bytes(bytes(flipped))
        (tmp_path / "f.zip.sha256").write_text(side)
        with pytest.raises(BundleInvalid):
            verify_bundle(bad)


def test_verify_command(tmp_path: Path) -> None:
    path = make(tmp_path)
    ok = CliRunner().invoke(app, ["respond", "verify", str(path)])
    assert ok.exit_code == 0 and "OK: 6 files, 5 event(s), alert pg-1" in ok.output
    bad = tmp_path / "bad.zip"
    rewrite(path, bad, "events.ndjson", b"e3", b"e9")
    failed = CliRunner().invoke(app, ["respond", "verify", str(bad)])
    assert failed.exit_code == 1
    assert failed.output.strip().startswith("error:") and "events.ndjson was changed" in failed.output
    wrong = CliRunner().invoke(app, ["respond", "verify", str(path), "--sha256", "0" * 64])
    assert wrong.exit_code == 1 and "the zip file was changed" in wrong.output


def test_respond_takes_an_alert_id_or_a_step() -> None:
    guide = CliRunner().invoke(app, ["respond", "1a"])
    assert guide.exit_code == 0 and "Login-failure burst" in guide.output
    missing = CliRunner().invoke(app, ["--url", "http://127.0.0.1:9", "respond", "pg-0000"])
    assert missing.exit_code == 1 and "error: cannot reach" in missing.output
