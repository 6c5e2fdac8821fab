"""The fields of the normalized event schema, read from the event mappings the pack installs
(pack/index/component-ecs.yaml and component-pacs.yaml): what a rule's filter and entity may name."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import yaml

from pacsguard.core.content import content_path

MAPPING_FILES = ("component-ecs.yaml", "component-pacs.yaml")
# Types a composite terms source can key on (an entity).
ENTITY_TYPES = {"keyword", "ip", "long", "integer", "boolean"}


def _walk(props: dict[str, Any], prefix: str, out: dict[str, str]) -> None:
    for name, spec in props.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            _walk(spec["properties"], f"{path}.", out)
        if "type" in spec and spec["type"] != "object":
            out[path] = str(spec["type"]) + ("" if spec.get("index", True) else ":not-indexed")


@lru_cache(maxsize=4)
def _load(root: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in MAPPING_FILES:
        doc = yaml.safe_load((content_path("pack", "index") / name).read_text())
        _walk(doc["body"]["template"]["mappings"]["properties"], "", out)
    return out


def schema_fields() -> dict[str, str]:
    """Every mapped field of the event schema and its type ('keyword', 'ip', 'date', ...)."""
    return _load(str(content_path("pack")))


def event_properties() -> dict[str, Any]:
    """The event mappings' properties (ECS and pacs.*), merged: the exceptions index keys its
    entity values with the same types, so one composite bucket joins an exception and the events."""
    merged: dict[str, Any] = {}
    for name in MAPPING_FILES:
        doc = yaml.safe_load((content_path("pack", "index") / name).read_text())
        merged.update(doc["body"]["template"]["mappings"]["properties"])
    return merged


def known_field(name: str, what: str, types: set[str] | None = None) -> str:
    """name when the schema maps it (with one of types); else the error a rule author sees."""
    fields = schema_fields()
    kind = fields.get(name)
    if kind is None:
        close = [f for f in fields if f.split(".")[-1] == name.split(".")[-1]][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"{what} {name!r} is not a field of the event schema (pack/index/component-*.yaml){hint}")
    if kind.endswith(":not-indexed"):
        raise ValueError(f"{what} {name!r} is not indexed: it cannot be searched")
    if types is not None and kind not in types:
        raise ValueError(f"{what} {name!r} is a {kind} field; it must be one of: {', '.join(sorted(types))}")
    return name


# A field name before ':' in a query string, outside quotes: `observer.hostname:ws-*`, `NOT a.b:(x OR y)`.
_QUOTED = re.compile(r'"(?:\\.|[^"\\])*"')
_FIELD = re.compile(r"(?<![\w.\\*])([A-Za-z_@][\w.@*]*)\s*:(?!/)")


def query_fields(query: str) -> list[str]:
    """The field names a Lucene query string names (quoted phrases and escaped colons left out)."""
    bare = _QUOTED.sub('""', query)
    return list(dict.fromkeys(_FIELD.findall(bare)))


def check_query(query: str) -> str:
    """A query string every field of which is a field of the schema; refuses a field-less term
    (it would search every field) and mustache (the monitor's query is a mustache template)."""
    if "{{" in query or "}}" in query:
        raise ValueError("a filter query may not hold '{{' or '}}' (the monitor's query is a mustache template)")
    names = query_fields(query)
    if not names:
        raise ValueError("a filter query names its fields (field:value); a bare term would search every field")
    for name in names:
        if "*" in name:
            raise ValueError(f"query field {name!r}: field names may not hold wildcards")
        known_field(name, "query field")
    return query
