"""Stamps: for every kind the pack owns, the stamp (owner, version, content hash) written into a
body is the one read back from it, without touching the rest of the body (no cluster)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pacsguard.core.render import canonical_hash
from pacsguard.packobjects import KINDS, PackObject, Stamp

# A body of each kind as the pack renders it, and how the cluster answers a GET for it
# (where that differs, the live shape is built from the stamped body).
BODIES: dict[str, dict[str, Any]] = {
    "security_role": {"description": "pacsguard analyst", "cluster_permissions": ["cluster_composite_ops_ro"]},
    "component_template": {"template": {"mappings": {"properties": {"user": {"type": "object"}}}}},
    "index_template": {"index_patterns": ["logs-pacs.audit-default"], "data_stream": {}, "priority": 200},
    "ingest_pipeline": {"description": "pacsguard: route a PACS audit event", "processors": [{"set": {"field": "a", "value": 1}}]},
    "index": {"settings": {"number_of_shards": 1}, "mappings": {"properties": {"error": {"type": "object"}}}},
    "notification_channel": {"config_id": "pacsguard-soc", "config": {"name": "soc", "description": "SOC webhook",
                                                                      "config_type": "webhook", "is_enabled": True}},
    "monitor": {"type": "monitor", "name": "pacsguard 1a", "monitor_type": "bucket_level_monitor", "inputs": []},
    "stored_script": {"script": {"lang": "painless", "source": "ctx.pacs.patient.remove('id');\n"}},
    "ism_policy": {"policy": {"description": "pacsguard: lifecycle", "default_state": "hot", "states": []}},
}
LIVE = {
    "index": lambda stamped: {"mappings": stamped["mappings"]},  # GET /<index>/_mapping
}
STAMP = Stamp("acme/radiology", "0.9.1", "0123456789abcdef")


def test_every_kind_has_a_sample() -> None:
    assert set(BODIES) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_stamp_round_trip(kind: str) -> None:
    handler = KINDS[kind]
    body = BODIES[kind]
    before = copy.deepcopy(body)
    stamped = handler.stamped(body, STAMP)
    assert body == before  # the rendered body is left alone
    live = LIVE.get(kind, lambda b: b)(stamped)
    assert handler.stamp_of(live) == STAMP
    # stamping again (an upgrade) replaces the stamp instead of adding a second one
    newer = Stamp("acme/radiology", "0.9.2", "fedcba9876543210")
    assert handler.stamp_of(LIVE.get(kind, lambda b: b)(handler.stamped(body, newer))) == newer


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_an_object_without_a_stamp_is_not_the_packs(kind: str) -> None:
    live = LIVE.get(kind, lambda b: b)(copy.deepcopy(BODIES[kind]) | ({"mappings": {}} if kind == "index" else {}))
    assert KINDS[kind].stamp_of(live) is None


@pytest.mark.parametrize("kind", ["ingest_pipeline", "security_role", "notification_channel", "ism_policy"])
def test_description_stamp_keeps_the_description(kind: str) -> None:
    stamped = KINDS[kind].stamped(BODIES[kind], STAMP)
    part = {"notification_channel": "config", "ism_policy": "policy"}.get(kind)
    described = stamped[part] if part else stamped
    original = (BODIES[kind][part] if part else BODIES[kind])["description"]
    assert described["description"] == f"{original} [pacsguard acme/radiology 0.9.1 #0123456789abcdef]"


def test_a_hand_written_stamp_lookalike_is_not_a_stamp() -> None:
    pipelines = KINDS["ingest_pipeline"]
    assert pipelines.stamp_of({"description": "x [pacsguard acme/default 1.0.0 #not-a-hash]"}) is None
    assert pipelines.stamp_of({"description": "[pacsguard acme/default 1.0.0 #0123456789abcdef] then more"}) is None
    assert pipelines.stamp_of({"description": "x [pacsguard 1.0.0 #0123456789abcdef]"}) is None  # no owner


def test_the_hash_is_of_the_rendered_body_not_of_the_stamped_one() -> None:
    obj = PackObject("ingest_pipeline", "pacsguard-router", BODIES["ingest_pipeline"], Path("router.yaml"))
    assert obj.hash == canonical_hash(BODIES["ingest_pipeline"])
    stamped = KINDS["ingest_pipeline"].stamped(obj.body, Stamp("pacsguard/default", "0.1.0", obj.hash))
    assert canonical_hash(stamped) != obj.hash
    stamp = KINDS["ingest_pipeline"].stamp_of(stamped)
    assert stamp is not None and stamp.hash == obj.hash
