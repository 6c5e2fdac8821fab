"""Evidence bundles: a zip that holds what is needed later, with hashes that show it is unchanged.

Layout (format pacsguard-evidence/1):
  alert.json       the alert as stored (either engine)
  rule.json        the rule: id, signal, name, version, content hash, file
  query.json       the index, the query and the window the events were taken with
  events.ndjson    every event of the entity in the window, one JSON document a line, in time order
  manifest.json    SHA-256 and size of each file above, the SHA-256 of the whole (over the sorted
                   "sha256  name" lines), collected-at, collected-by, the event count
  manifest.sha256  the SHA-256 of manifest.json, so a change to the manifest is seen too
Next to the zip, `<bundle>.zip.sha256` (sha256sum format) holds the hash of the zip file
itself; it covers the bytes the zip format adds (headers, dates), which the manifest cannot.

Events come from the index, where patient identifiers are already salted hashes
(docs/design.md): the bundle holds no PHI the index does not.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsguard.core.errors import PacsguardError

FORMAT = "pacsguard-evidence/1"
CONTENT_FILES = ("alert.json", "rule.json", "query.json", "events.ndjson")
MANIFEST, MANIFEST_HASH = "manifest.json", "manifest.sha256"
# Fixed member dates: the same evidence gives the same zip bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode()


def whole_hash(files: dict[str, dict[str, Any]]) -> str:
    return sha256("".join(f"{files[name]['sha256']}  {name}\n" for name in sorted(files)).encode())


@dataclass
class Bundle:
    path: Path
    sha256: str                 # of the zip file
    whole_sha256: str           # over the content files (manifest)
    events: int
    manifest: dict[str, Any] = field(default_factory=dict)


def write_bundle(path: Path, *, alert: dict[str, Any], rule: dict[str, Any], query: dict[str, Any],
                 events: Iterable[dict[str, Any]], collected_at: str, collected_by: str) -> Bundle:
    """Write the zip (and its .sha256 beside it); events are streamed into the zip, not held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    count = 0

    def member(zf: zipfile.ZipFile, name: str, chunks: Iterator[bytes]) -> None:
        digest, size = hashlib.sha256(), 0
        info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        with zf.open(info, "w") as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        files[name] = {"sha256": digest.hexdigest(), "bytes": size}

    def event_lines() -> Iterator[bytes]:
        nonlocal count
        for event in events:
            count += 1
            yield (json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
                   + "\n").encode()

    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w") as zf:
        member(zf, "alert.json", iter([_json_bytes(alert)]))
        member(zf, "rule.json", iter([_json_bytes(rule)]))
        member(zf, "query.json", iter([_json_bytes(query)]))
        member(zf, "events.ndjson", event_lines())
        manifest = {"format": FORMAT, "alert_id": alert.get("id"), "collected_at": collected_at,
                    "collected_by": collected_by, "events": count, "query": query,
                    "files": files, "sha256": whole_hash(files)}
        manifest_bytes = _json_bytes(manifest)
        member(zf, MANIFEST, iter([manifest_bytes]))
        member(zf, MANIFEST_HASH, iter([f"{sha256(manifest_bytes)}  {MANIFEST}\n".encode()]))
    tmp.replace(path)
    zip_hash = sha256(path.read_bytes())
    sidecar(path).write_text(f"{zip_hash}  {path.name}\n")
    return Bundle(path, zip_hash, whole_hash(files), count, manifest)


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


class BundleInvalid(PacsguardError):
    """A bundle that fails verification; the message names the file."""


@dataclass
class Verified:
    path: Path
    alert_id: str | None
    events: int
    whole_sha256: str
    zip_sha256: str
    checked: list[str]
    sidecar_checked: bool


def verify_bundle(path: Path, expect_sha256: str | None = None) -> Verified:
    """Recompute every hash; raise BundleInvalid naming the first file that does not match."""
    if not path.is_file():
        raise PacsguardError(f"{path}: no such file")
    raw = path.read_bytes()
    zip_hash = sha256(raw)
    side = sidecar(path)
    expected_zip = expect_sha256
    if expected_zip is None and side.is_file():
        expected_zip = side.read_text().split()[0] if side.read_text().split() else ""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            wanted = [*CONTENT_FILES, MANIFEST, MANIFEST_HASH]
            missing = [n for n in wanted if n not in names]
            if missing:
                raise BundleInvalid(f"{path}: {missing[0]} is missing from the bundle")
            extra = [n for n in names if n not in wanted]
            if extra:
                raise BundleInvalid(f"{path}: {extra[0]} is in the bundle but not in its manifest")
            data: dict[str, bytes] = {}
            for name in wanted:
                try:
                    data[name] = zf.read(name)
                except zipfile.BadZipFile as exc:  # e.g. "Bad CRC-32": the stored bytes changed
                    raise BundleInvalid(f"{path}: {name} was changed ({exc})") from None
                # A damaged member fails in many ways (zlib.error, an unknown compression method,
                # a bad header): whatever it is, the bytes are not the ones that were hashed.
                except Exception as exc:  # noqa: BLE001
                    raise BundleInvalid(f"{path}: {name} was changed (cannot be read: {exc})") from None
    except BundleInvalid:
        raise
    except Exception as exc:  # noqa: BLE001 - as above, for the zip's own directory
        raise BundleInvalid(f"{path}: not a readable zip ({exc})") from None
    listed = data[MANIFEST_HASH].decode(errors="replace").split()
    if not listed or listed[0] != sha256(data[MANIFEST]):
        raise BundleInvalid(f"{path}: {MANIFEST} was changed (its SHA-256 differs from {MANIFEST_HASH})")
    try:
        manifest = json.loads(data[MANIFEST])
    except ValueError as exc:
        raise BundleInvalid(f"{path}: {MANIFEST} is not JSON ({exc})") from None
    files = manifest.get("files") or {}
    for name in CONTENT_FILES:
        want = (files.get(name) or {}).get("sha256")
        if want != sha256(data[name]):
            raise BundleInvalid(f"{path}: {name} was changed (SHA-256 {sha256(data[name])}, manifest says {want})")
    if manifest.get("sha256") != whole_hash(files):
        raise BundleInvalid(f"{path}: {MANIFEST} was changed (the whole-bundle SHA-256 does not match its files)")
    if expected_zip is not None and expected_zip != zip_hash:
        where = "the expected value" if expect_sha256 else side.name
        raise BundleInvalid(f"{path}: the zip file was changed (SHA-256 {zip_hash}, {where} says {expected_zip})")
    lines = data["events.ndjson"].count(b"\n")
    if lines != manifest.get("events"):
        raise BundleInvalid(f"{path}: events.ndjson holds {lines} events, the manifest says {manifest.get('events')}")
    return Verified(path, manifest.get("alert_id"), lines, manifest["sha256"], zip_hash,
                    [*CONTENT_FILES, MANIFEST, MANIFEST_HASH], expected_zip is not None)
