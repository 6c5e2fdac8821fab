"""Render content files (YAML with Jinja2) into cluster objects.

A sandboxed environment with StrictUndefined: a typo in a template variable is
an error naming the file and line, never an empty string in a cluster object.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined
from jinja2.sandbox import SandboxedEnvironment

from pacsguard.core.content import content_path  # noqa: F401 - re-exported for content loaders
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings, duration_seconds
from pacsguard.core.vocabulary import vocabulary

ENV = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


def _tojson(value: Any) -> str:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming the variable (json.dumps would raise TypeError)
    return json.dumps(value)


ENV.filters["tojson"] = _tojson
ENV.filters["seconds"] = duration_seconds


class ContentError(PacsguardError):
    """A content file that cannot be rendered or parsed; names file and line."""


def render_context(settings: Settings, salt: str | None = None,
                   capabilities: Iterable[str] = (), envelope_key: str | None = None) -> dict[str, Any]:
    """What content templates may use. capabilities: modules/plugins the target cluster has."""
    caps = set(capabilities)
    return {
        "schema": vocabulary().template_context(),
        "capabilities": {"geoip": "ingest-geoip" in caps},
        # ids of this installation's objects start with prefix (<id_prefix>-<namespace>), so two
        # namespaces under one id_prefix never share (or overwrite) a pipeline or template
        "prefix": settings.scope,
        "namespace": settings.namespace,
        "indices": {key: settings.index(key) for key in type(settings.indices).model_fields},
        "thresholds": settings.thresholds.model_dump(),
        "retention": settings.retention.model_dump(),
        "internal_domains": list(settings.internal_domains),
        "sources": settings.sources.model_dump(),
        # per format, where its patient data hides (sources.<format>.patient; enrich reads it)
        "patient_data": {name: source.patient.model_dump() for name, source in settings.sources
                         if hasattr(source, "patient")},
        # per format, how its account names are keyed; addresses: e-mails and share recipients
        # (docs/identity.md; enrich reads them)
        "identity": {**{name: source.identity.model_dump() for name, source in settings.sources
                        if name in vocabulary().formats},
                     "addresses": settings.sources.addresses.model_dump()},
        "salt": salt or "",
        # without a key (a render for checks, not an install) the router refuses every envelope
        "envelope_key": envelope_key or "",
    }


def render_yaml(path: Path, context: dict[str, Any]) -> Any:
    text = path.read_text()
    try:
        rendered = ENV.from_string(text).render(**context)
    except TemplateSyntaxError as exc:
        raise ContentError(f"{path}:{exc.lineno}: template error: {exc.message}") from None
    except TemplateError as exc:
        raise ContentError(f"{path}{_template_line(exc)}: template error: {exc}") from None
    try:
        return yaml.safe_load(rendered)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ContentError(f"{path}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None


def _template_line(exc: BaseException) -> str:
    """':<line>' of the template line a render error happened on, from the frames Jinja maps back
    to the template (an UndefinedError carries no line number of its own)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f":{line}" if line else ""


def canonical_hash(body: Any) -> str:
    """Content hash of a rendered body: stable across key order and whitespace."""
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
