"""Exceptions: an entity a rule (or every rule) must not alert on, until an expiry.

They live in an index the pack owns (settings indices.exceptions). Each document carries the
excepted value under the entity's own field (`user.name: alice`, `source.ip: 10.0.0.7`, or
`exception.key` for a rule whose entity joins several fields), mapped with the event schema's
types, so the rule's one search input reads events and exceptions together and the composite
bucket of an entity holds both (DESIGN.md D5, as baselines do). A filter sub-aggregation
counts the entity's exceptions that are in force at the run's period_end, and every trigger
holds only where that count is 0. Both engines run that same monitor body: an exception applies
from the next run after it is written, and stops applying, without anyone touching anything,
at the first run past its expiry; an alert it held back then comes back if the condition holds.
"""

from __future__ import annotations

from typing import Any

from pacsguard.core.content import content_path
from pacsguard.core.fields import event_properties
from pacsguard.core.settings import Settings
from pacsguard.packobjects import PackObject

EXCEPTED_AGG = "excepted"
ANY_RULE = "*"
PERIOD_END = "{{period_end}}"


EXCEPTION = "exception"
SNOOZE = "snooze"


def in_force(rules: list[str], at: str = PERIOD_END, kind: str = EXCEPTION) -> dict[str, Any]:
    """The exception (or snooze) documents of these rules (or every rule) not expired at `at` (epoch ms)."""
    return {"bool": {"filter": [
        {"term": {"exception.kind": kind}},
        {"terms": {"exception.rules": [*rules, ANY_RULE]}},
        {"range": {"exception.expires": {"gt": at, "format": "epoch_millis"}}},
    ]}}


def with_exceptions(monitor: dict[str, Any], signal: str, index: str) -> dict[str, Any]:
    """The monitor body reading the exceptions index too: no trigger holds for an excepted entity."""
    clause = in_force([signal])
    search = monitor["inputs"][0]["search"]
    search["indices"] = [*search["indices"], index]
    query = search["query"]
    query["query"] = {"bool": {"should": [query["query"], clause], "minimum_should_match": 1}}
    for agg in query["aggregations"].values():
        agg.setdefault("aggs", {})[EXCEPTED_AGG] = {"filter": clause}
    for trig in monitor["triggers"]:
        cond = trig["bucket_level_trigger"]["condition"]
        cond["buckets_path"] = {**cond["buckets_path"], EXCEPTED_AGG: f"{EXCEPTED_AGG}._count"}
        cond["script"] = {**cond["script"], "source": f"({cond['script']['source']}) && params.{EXCEPTED_AGG} == 0"}
    return monitor


def index_object(settings: Settings) -> PackObject:
    """The exceptions index: the event schema's fields (the excepted values) and exception.*."""
    body = {
        "settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1"}},
        "mappings": {"dynamic": False, "properties": {
            **event_properties(),
            "exception": {"properties": {
                "id": {"type": "keyword"}, "rules": {"type": "keyword"}, "field": {"type": "keyword"},
                "value": {"type": "keyword"}, "key": {"type": "keyword"}, "reason": {"type": "keyword"},
                "author": {"type": "keyword"}, "created": {"type": "date"}, "expires": {"type": "date"},
                "alert_id": {"type": "keyword"}, "kind": {"type": "keyword"}}},
        }},
    }
    return PackObject("index", settings.index("exceptions"), body, content_path("pack", "index"))
