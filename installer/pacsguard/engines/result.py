"""What one run of a monitor says, whichever engine ran it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALERTING = "alerting-dryrun"
CORE = "core-search"
# The composite source names of a rule's entity (rules/compiler.py builds them): one field is
# keyed as ENTITY_SOURCE; an entity of several fields (signal 3: actor, action, target) as ONE
# joined key, JOINED_SOURCE. Alerting builds `bucket_keys` from a hash map, so with several
# sources their order is not the rule's; one key keeps the order in the alert, its message and
# every reader, on both engines.
ENTITY_SOURCE = "entity"
JOINED_SOURCE = "entity_keys"
KEY_SEPARATOR = "|"


@dataclass(frozen=True)
class Bucket:
    """One triggered entity: its composite key values and the trigger's buckets_path values."""

    keys: tuple[str, ...]
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def entity(self) -> str:
        """The entity as one string, exactly as both engines key it (Alerting's `bucket_keys`)."""
        return join_keys(self.keys)

    @property
    def count(self) -> Any:
        """The trigger's main figure (events, studies, failures, new values), where the engine knows it."""
        for name in ("value", "fails", "values"):
            if name in self.values:
                return self.values[name]
        return None


@dataclass
class TriggerResult:
    name: str
    severity: str
    buckets: list[Bucket] = field(default_factory=list)
    trigger_id: str = ""

    @property
    def entities(self) -> list[str]:
        return [b.entity for b in self.buckets]


@dataclass
class MonitorRun:
    engine: str
    triggers: list[TriggerResult]
    took_ms: float
    error: str | None = None

    def fired(self, severity: str | None = None) -> set[str]:
        return {e for t in self.triggers if severity is None or t.severity == severity for e in t.entities}


def join_keys(keys: tuple[str, ...] | list[str]) -> str:
    """One field's value as is; several fields joined by '|' with '\\' and '|' escaped (what the
    joined composite source's script returns), so a value holding '|' cannot pass for two."""
    if len(keys) == 1:
        return str(keys[0])
    return KEY_SEPARATOR.join(str(k).replace("\\", "\\\\").replace(KEY_SEPARATOR, "\\" + KEY_SEPARATOR)
                              for k in keys)


def split_keys(joined: str) -> tuple[str, ...]:
    """The inverse of join_keys for a joined key."""
    parts, current, escaped = [], [], False
    for ch in joined:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == KEY_SEPARATOR:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return tuple(parts)


def key_values(key: Any) -> tuple[str, ...]:
    """The entity's field values, in the rule's order, from a composite bucket's key map (core
    search, Alerting's dry run and its alerts: `agg_alert_content.bucket.key`): read by name,
    never by position."""
    if isinstance(key, dict):
        if JOINED_SOURCE in key:
            return split_keys(str(key[JOINED_SOURCE] or ""))
        if ENTITY_SOURCE in key:
            return ("" if key[ENTITY_SOURCE] is None else str(key[ENTITY_SOURCE]),)
        values = list(key.values())
    elif isinstance(key, list):
        values = key
    else:
        values = [key]
    return tuple("" if v is None else str(v) for v in values)
