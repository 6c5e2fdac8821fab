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


def run(cluster: Cluster, monitor: dict[str, Any], period_end: dt.datetime) -> MonitorRun:
    started = time.monotonic()
    search = monitor["inputs"][0]["search"]
    query = render_query(search["query"], period_end)
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
