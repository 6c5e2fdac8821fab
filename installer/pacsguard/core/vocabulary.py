"""The one vocabulary of the pack, loaded from pack/schema.yaml.

Actions and outcomes of the normalized events, the source formats, the event
size limit, the profile kinds and baseline metrics the jobs keep: rules,
jobs, the collector and the pipeline templates all read them from here, so a
name is written once.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

import yaml

from pacsguard.core.content import content_path
from pacsguard.core.errors import PacsguardError
from pacsguard.core.models import Frozen


class ActionSpec(Frozen):
    category: list[str]
    type: list[str]


class KeycloakLine(Frozen):
    any: list[str]
    all: list[list[str]]


class ProfileKind(Frozen):
    field: str
    events: Literal["login", "external_share"]
    new_login: bool


class BaselineMetric(Frozen):
    actions: list[str]
    unit: Literal["hour", "day"]
    value: Literal["distinct_studies", "events", "external_recipients"]


class Vocabulary(Frozen):
    actions: dict[str, ActionSpec]
    outcomes: list[str]
    formats: list[str]
    max_event_bytes: int
    keycloak_line: KeycloakLine
    profile_kinds: dict[str, ProfileKind]
    baseline_metrics: dict[str, BaselineMetric]

    def is_keycloak_line(self, line: str) -> bool:
        """A Keycloak event line (not server noise); the router's painless test reads the same markers."""
        marks = self.keycloak_line
        return any(m in line for m in marks.any) or any(all(m in line for m in group) for group in marks.all)

    @property
    def new_login_kinds(self) -> list[str]:
        return [name for name, kind in self.profile_kinds.items() if kind.new_login]

    def template_context(self) -> dict[str, Any]:
        """What content templates see as `schema`."""
        return self.model_dump(mode="json")


@lru_cache(maxsize=4)
def _load(path: str) -> Vocabulary:
    with open(path) as fh:
        data = yaml.safe_load(fh)
    try:
        vocab = Vocabulary.model_validate(data)
    except Exception as exc:  # noqa: BLE001 - a broken vocabulary is a content error naming the file
        raise PacsguardError(f"{path}: invalid vocabulary: {exc}") from None
    unknown = {a for m in vocab.baseline_metrics.values() for a in m.actions} - vocab.actions.keys()
    if unknown:
        raise PacsguardError(f"{path}: baseline_metrics name unknown actions: {', '.join(sorted(unknown))}")
    return vocab


def vocabulary() -> Vocabulary:
    """The vocabulary of the content in use (PACSGUARD_CONTENT or the packaged one)."""
    return _load(str(content_path("pack", "schema.yaml")))
