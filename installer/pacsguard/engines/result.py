"""What one run of a monitor says, whichever engine ran it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALERTING = "alerting-dryrun"
CORE = "core-search"


@dataclass(frozen=True)
class Bucket:
    """One triggered entity: its composite key values and the trigger's buckets_path values."""

    keys: tuple[str, ...]
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def entity(self) -> str:
        """The bucket keys comma-joined, as Alerting's `bucket_keys`."""
        return ",".join(self.keys)

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


def key_values(key: Any) -> tuple[str, ...]:
    """Composite key values (core search: a dict) or Alerting's bucket_keys (a list or comma-joined string)."""
    if isinstance(key, dict):
        values = list(key.values())
    elif isinstance(key, list):
        values = key
    else:
        values = str(key).split(",")
    return tuple("" if v is None else str(v) for v in values)
