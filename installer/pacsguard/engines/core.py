"""Run a monitor body with core OpenSearch search: the pack's engine where Alerting is absent.

It does what Alerting does with a bucket-level monitor: renders the search
input's mustache with period_end (locally: no `_render/template`, whose every
call is a dynamic script compilation the cluster rate-limits at 75 per 5
minutes), runs the search, and keeps the composite buckets for which each
trigger's painless condition holds. The condition runs on the cluster as a
`bucket_selector` with the same buckets_path and script, so it is the same
painless, and the composite aggregation is paged to its end.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pystache

from pacsguard.core.connection import Cluster
from pacsguard.engines.result import CORE, Bucket, MonitorRun, TriggerResult, key_values

_RENDERER = pystache.Renderer(escape=lambda text: text, missing_tags="ignore")
SELECTOR = "_pacsguard_trigger"


def render_mustache(template: str, context: dict[str, Any]) -> str:
    """Mustache as Alerting renders it for messages and search inputs (no HTML escaping)."""
    return str(_RENDERER.render(template, context))


def render_query(query: dict[str, Any], period_end: dt.datetime) -> dict[str, Any]:
    millis = int(period_end.timestamp() * 1000)
    rendered: dict[str, Any] = json.loads(render_mustache(json.dumps(query), {
        "period_end": millis, "period_start": millis - 60_000}))
    return rendered


def bucket_value(bucket: dict[str, Any], path: str) -> Any:
    """A buckets_path ('recent>value', 'before._count', 'values') read from a response bucket."""
    node: Any = bucket
    head, _, tail = path.partition(".")
    for part in head.split(">"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    if tail == "_count":
        return node.get("doc_count") if isinstance(node, dict) else None
    if isinstance(node, dict):
        return node.get("value", node.get("doc_count"))
    return node


def run(cluster: Cluster, monitor: dict[str, Any], period_end: dt.datetime,
        only: tuple[str, list[str]] | None = None) -> MonitorRun:
    """Run the monitor at period_end; only=(field, values) narrows it to those entities (every
    document the query joins, events, baselines, directory and profiles, carries the entity field)."""
    started = time.monotonic()
    search = monitor["inputs"][0]["search"]
    query = render_query(search["query"], period_end)
    if only is not None:
        query["query"] = {"bool": {"filter": [query["query"], {"terms": {only[0]: only[1]}}]}}
    indices = ",".join(search["indices"])
    results: list[TriggerResult] = []
    for trig in monitor["triggers"]:
        body = trig["bucket_level_trigger"]
        cond = body["condition"]
        q = copy.deepcopy(query)
        parent = q["aggregations"][cond["parent_bucket_path"]]
        parent.setdefault("aggs", {})[SELECTOR] = {"bucket_selector": {
            "buckets_path": cond["buckets_path"], "script": cond["script"]}}
        result = TriggerResult(body["name"], str(body["severity"]), trigger_id=str(body.get("id") or body["name"]))
        while True:
            res = cluster.request("POST", f"/{indices}/_search", params={"ignore_unavailable": "true"}, body=q)
            agg = res.get("aggregations", {}).get(cond["parent_bucket_path"], {"buckets": []})
            for b in agg["buckets"]:
                values = {name: bucket_value(b, path) for name, path in cond["buckets_path"].items()}
                result.buckets.append(Bucket(key_values(b["key"]), values))
            after = agg.get("after_key")
            # page on: the selector may empty a page while more keys follow
            if not after or after == parent["composite"].get("after"):
                break
            parent["composite"]["after"] = after
        results.append(result)
    return MonitorRun(CORE, results, (time.monotonic() - started) * 1000)


@dataclass(frozen=True)
class Arrival:
    """Events of one entity that arrived (by event.ingested) in a span, with own times (the rule's
    time field) in one cell [cell, cell + step) of a grid: the latest of those times, and how many."""

    entity: str
    cell: dt.datetime
    last: dt.datetime
    count: int


def arrivals(cluster: Cluster, index: str, events: dict[str, Any], entity_field: str, time_field: str,
             ingested: tuple[dt.datetime, dt.datetime], before: dt.datetime, step_seconds: int,
             page_size: int) -> list[Arrival]:
    """Which entities have events matching `events` that arrived in (ingested[0], ingested[1]]
    with an own time before `before`, and in which cells of a `step_seconds` grid those times lie:
    a composite aggregation on (entity, date histogram), paged to its end. Only cells holding
    such events come back, so a sparse trickle of late events costs what it holds."""
    query = {"bool": {"filter": [events,
                                 {"range": {INGESTED: {"gt": _millis(ingested[0]), "lte": _millis(ingested[1]),
                                                       "format": "epoch_millis"}}},
                                 {"range": {time_field: {"lt": _millis(before), "format": "epoch_millis"}}}]}}
    composite: dict[str, Any] = {"size": page_size, "sources": [
        {"entity": {"terms": {"field": entity_field}}},
        {"cell": {"date_histogram": {"field": time_field, "fixed_interval": f"{step_seconds}s"}}}]}
    body = {"size": 0, "query": query, "aggregations": {"late": {"composite": composite, "aggs": {
        "last": {"max": {"field": time_field}}}}}}
    return [Arrival(str(b["key"]["entity"]), _from_millis(b["key"]["cell"]), _from_millis(b["last"]["value"]),
                    int(b["doc_count"])) for b in _pages(cluster, index, body, "late")]


def entities(cluster: Cluster, index: str, events: dict[str, Any], entity_field: str, time_field: str,
             since: dt.datetime, until: dt.datetime, page_size: int) -> list[str]:
    """Which entities have events matching `events` with own times in [since, until]: the only
    ones a rule that needs events in that window can fire for (a composite on the entity)."""
    query = {"bool": {"filter": [events, {"range": {time_field: {
        "gte": _millis(since), "lte": _millis(until), "format": "epoch_millis"}}}]}}
    body = {"size": 0, "query": query, "aggregations": {"active": {"composite": {
        "size": page_size, "sources": [{"entity": {"terms": {"field": entity_field}}}]}}}}
    return [str(b["key"]["entity"]) for b in _pages(cluster, index, body, "active")]


def _pages(cluster: Cluster, index: str, body: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    """The buckets of the composite aggregation `name` of a search body, paged to its end."""
    composite = body["aggregations"][name]["composite"]
    while True:
        res = cluster.request("POST", f"/{index}/_search", params={"ignore_unavailable": "true"}, body=body)
        agg = res.get("aggregations", {}).get(name, {"buckets": []})
        yield from agg["buckets"]
        after = agg.get("after_key")
        if not after or not agg["buckets"]:
            return
        composite["after"] = after


INGESTED = "event.ingested"


def _millis(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def _from_millis(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value / 1000, dt.timezone.utc)
