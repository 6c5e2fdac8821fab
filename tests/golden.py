"""Golden tests of the ingest pipelines, as elastic-package runs them: raw inputs in the
sources' real formats beside each pipeline, the documents the router makes of them in an
expected file beside each input, and a config for what may not be compared by value.

Per pipeline folder pipelines/<name>/:

    pipeline.yaml
    _dev/test/pipeline/
        <case>.<ext>                   a raw input, written for this repository
        <case>.<ext>-expected.json     {"expected": [{"index": "events" | "failures", "doc": {...}}
                                        or {"index": "dropped", "doc": null}, ...]}
        <case>.<ext>-config.yml        optional, for this input: fields, as_document
        test-common-config.yml         optional, for the folder: via_collector, dynamic fields
        README.md                      optional notes

pipelines/_dev/test-common-config.yml holds what every folder shares (the ingest-clock fields).

Inputs by extension: `.log` is one event per line (blank lines skipped); `.json`, `.xml` and
`.syslog` are one event per file. Each event is sent as text in `message`, as shippers do,
unless `as_document` sends the parsed JSON object as the document itself, or `via_collector`
first runs the bytes through the collector's frame conversion and ATNA parser (OpenSearch has
no XML processor: that is the only way ATNA XML reaches the cluster). `fields` adds fields to
every event (e.g. the `@timestamp` a shipper sets).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from documents import flatten

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / "pipelines"
SHARED_CONFIG = PIPELINES / "_dev" / "test-common-config.yml"
TEST_DIR = Path("_dev", "test", "pipeline")
INPUT_KINDS = {".log": "lines", ".json": "file", ".xml": "file", ".syslog": "file"}
EXPECTED_SUFFIX = "-expected.json"
CONFIG_SUFFIX = "-config.yml"
FOLDER_CONFIG = "test-common-config.yml"
NOTES = {"README.md"}
DYNAMIC = "<dynamic>"
DROPPED = "dropped"  # the index role of an event a pipeline drops on purpose (doc: null), e.g. proxy static assets
_MISSING = object()
CONFIG_KEYS = {"fields", "as_document", "via_collector", "dynamic_fields", "failure_dynamic_fields"}


class GoldenError(Exception):
    """A golden-test file that is not what the layout above says, named with its path."""


@dataclass
class Config:
    fields: dict[str, Any] = field(default_factory=dict)
    as_document: bool = False
    via_collector: bool = False
    dynamic_fields: dict[str, str] = field(default_factory=dict)
    failure_dynamic_fields: dict[str, str] = field(default_factory=dict)

    def merged(self, path: Path) -> Config:
        """This config with the one in `path` laid over it (mappings merge, flags replace)."""
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise GoldenError(f"{rel(path)}: a config is a mapping")
        unknown = set(raw) - CONFIG_KEYS
        if unknown:
            raise GoldenError(f"{rel(path)}: unknown key(s) {sorted(unknown)}; known: {sorted(CONFIG_KEYS)}")
        out = dataclasses.replace(self, fields=dict(self.fields), dynamic_fields=dict(self.dynamic_fields),
                                  failure_dynamic_fields=dict(self.failure_dynamic_fields))
        for key, value in raw.items():
            if key in ("fields", "dynamic_fields", "failure_dynamic_fields"):
                if not isinstance(value, dict):
                    raise GoldenError(f"{rel(path)}: {key} must be a mapping")
                getattr(out, key).update(value)
            elif not isinstance(value, bool):
                raise GoldenError(f"{rel(path)}: {key} must be true or false")
            else:
                setattr(out, key, value)
        for key, pattern in {**out.dynamic_fields, **out.failure_dynamic_fields}.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise GoldenError(f"{rel(path)}: {key}: bad pattern: {exc}") from None
        return out


@dataclass(frozen=True)
class Event:
    where: str  # "line 3" or "file"
    source: dict[str, Any]  # the document handed to the router


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def pipeline_folders() -> list[Path]:
    """Every pipeline folder (one holding pipeline.yaml)."""
    return sorted(p.parent for p in PIPELINES.glob("*/pipeline.yaml"))


def test_dir(folder: Path) -> Path:
    return folder / TEST_DIR


def inputs(folder: Path) -> list[Path]:
    directory = test_dir(folder)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in INPUT_KINDS and not p.name.endswith(EXPECTED_SUFFIX))


def all_inputs() -> list[Path]:
    return [path for folder in pipeline_folders() for path in inputs(folder)]


def stray_files(folder: Path) -> list[str]:
    """Files in a test folder that are neither an input, its expected file or config, nor notes."""
    directory = test_dir(folder)
    if not directory.is_dir():
        return []
    known = {p.name for p in inputs(folder)}
    stray = []
    for path in sorted(directory.iterdir()):
        name = path.name
        if name in known or name in NOTES or name == FOLDER_CONFIG:
            continue
        owner = name.removesuffix(EXPECTED_SUFFIX).removesuffix(CONFIG_SUFFIX)
        if owner != name and owner in known:
            continue
        stray.append(rel(path))
    return stray


def expected_path(input_path: Path) -> Path:
    return input_path.with_name(input_path.name + EXPECTED_SUFFIX)


def config_for(input_path: Path) -> Config:
    config = Config().merged(SHARED_CONFIG)
    folder_config = input_path.parent / FOLDER_CONFIG
    if folder_config.exists():
        config = config.merged(folder_config)
    own = input_path.with_name(input_path.name + CONFIG_SUFFIX)
    if own.exists():
        config = config.merged(own)
    return config


def read_events(input_path: Path, config: Config) -> list[Event]:
    """The documents the router receives for one input file."""
    raw = input_path.read_bytes()
    if INPUT_KINDS[input_path.suffix] == "lines":
        text = raw.decode("utf-8")
        pieces = [(f"line {n}", line.encode("utf-8")) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        pieces = [("file", raw)]
    return [Event(where, _document(input_path, where, data, config)) for where, data in pieces]


def _document(input_path: Path, where: str, data: bytes, config: Config) -> dict[str, Any]:
    if config.via_collector:
        from pacsguard.collector.service import CollectorConfig
        from pacsguard.collector.syslog_input import convert_frame

        # the collector's own default limit, as `pacsguard collect` applies it
        limit = next(f.default for f in dataclasses.fields(CollectorConfig) if f.name == "max_message_bytes")
        assert isinstance(limit, int)
        doc: dict[str, Any] = {"message": convert_frame(data, max_bytes=limit, strict=False).message}
    elif config.as_document:
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise GoldenError(f"{rel(input_path)}: {where}: as_document needs a JSON object: {exc}") from None
        if not isinstance(parsed, dict):
            raise GoldenError(f"{rel(input_path)}: {where}: as_document needs a JSON object")
        doc = parsed
    else:
        doc = {"message": data.decode("utf-8")}
    return {**doc, **config.fields}


def normalize(result: dict[str, Any], config: Config) -> dict[str, Any]:
    """A simulate result as the expected file holds it: index role, ingest-clock fields masked."""
    if result["doc"] is None:
        return {"index": result["index"], "doc": None}
    doc = json.loads(json.dumps(result["doc"]))
    dynamic = dict(config.dynamic_fields)
    if result["index"] == "failures":
        dynamic.update(config.failure_dynamic_fields)
    for dotted, pattern in dynamic.items():
        parent, _, leaf = dotted.rpartition(".")
        node = doc
        for part in parent.split(".") if parent else []:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and isinstance(node[leaf], str) and re.fullmatch(pattern, node[leaf]):
            node[leaf] = DYNAMIC
    return {"index": result["index"], "doc": doc}


def load_expected(input_path: Path) -> list[dict[str, Any]]:
    path = expected_path(input_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("expected"), list):
        raise GoldenError(f"{rel(path)}: must be {{\"expected\": [...]}}")
    expected: list[dict[str, Any]] = data["expected"]
    return expected


def write_expected(input_path: Path, results: list[dict[str, Any]]) -> None:
    text = json.dumps({"expected": results}, indent=2, sort_keys=True, ensure_ascii=False)
    expected_path(input_path).write_text(text + "\n", encoding="utf-8")


def differences(events: list[Event], actual: list[dict[str, Any]], expected: list[dict[str, Any]],
                limit: int = 25) -> list[str]:
    """What differs, one line per field: '<where>: <field>: expected X, got Y'."""
    out: list[str] = []
    if len(actual) != len(expected):
        out.append(f"{len(actual)} events, the expected file has {len(expected)}")
    for event, got, want in zip(events, actual, expected):
        flat_got, flat_want = flatten(got), flatten(want)
        for key in sorted(set(flat_got) | set(flat_want)):
            if flat_got.get(key, _MISSING) != flat_want.get(key, _MISSING):
                out.append(f"{event.where}: {key}: expected {_show(flat_want.get(key, _MISSING))}, "
                           f"got {_show(flat_got.get(key, _MISSING))}")
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more"]
    return out


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:200] + "..."
