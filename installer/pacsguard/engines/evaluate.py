"""Run a compiled monitor once and say which entities its triggers fire for.

Where the cluster runs Alerting, this is Alerting's own dry run
(`_plugins/_alerting/monitors/_execute?dryrun=true`). Where it does not (the
local Maven-built node: the plugin zips are not on Maven Central), the same
monitor body is evaluated with core OpenSearch doing the same work Alerting
does: the search input is rendered by the cluster's mustache engine with
period_end, run as is, and each bucket-level trigger condition runs as a
`bucket_selector` (same buckets_path, same painless script) inside the
composite aggregation; doc-level queries run as query_string queries. The
result names the engine that produced it.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from pacsguard.core.connection import Cluster

ALERTING = "alerting-dryrun"
CORE = "core-search"


@dataclass
class TriggerResult:
    name: str
    severity: str
    entities: list[str] = field(default_factory=list)


@dataclass
class MonitorRun:
    engine: str
    triggers: list[TriggerResult]
    took_ms: float

    def fired(self, severity: str | None = None) -> set[str]:
        return {e for t in self.triggers if severity is None or t.severity == severity for e in t.entities}


def _entity(key: Any) -> str:
    """A bucket key as one string: the composite key's values (core search) or
    Alerting's bucket_keys list, joined by commas."""
    if isinstance(key, dict):
        return ",".join(str(v) for v in key.values())
    if isinstance(key, list):
        return ",".join(str(v) for v in key)
    return str(key)


def run_monitor(cluster: Cluster, monitor: dict[str, Any], period_end: dt.datetime | None = None,
                engine: str | None = None) -> MonitorRun:
    if engine is None:
        plugins, _ = cluster.installed_components()
        engine = ALERTING if "opensearch-alerting" in plugins else CORE
    if engine == ALERTING:
        return _run_alerting(cluster, monitor)
    return _run_core(cluster, monitor, period_end or dt.datetime.now(dt.timezone.utc))


# ---------------------------------------------------------------- Alerting


def _run_alerting(cluster: Cluster, monitor: dict[str, Any]) -> MonitorRun:
    started = dt.datetime.now()
    res = cluster.request("POST", "/_plugins/_alerting/monitors/_execute", params={"dryrun": "true"}, body=monitor)
    took = (dt.datetime.now() - started).total_seconds() * 1000
    return MonitorRun(ALERTING, alerting_triggers(monitor, res), took)


def alerting_triggers(monitor: dict[str, Any], response: dict[str, Any]) -> list[TriggerResult]:
    """The triggers of an Alerting `_execute` response, with the entities each fired for.

    trigger_results is keyed by trigger id; a monitor body run without saving
    has ids the plugin made up, so a trigger is found by id, else by name.
    Entities read as the core engine gives them: a bucket's keys joined by
    commas, a document's id (Alerting lists triggered docs as "<id>|<index>").
    """
    results: list[TriggerResult] = []
    by_id: dict[str, dict[str, Any]] = {}
    for trig in monitor.get("triggers", []):
        body = next(iter(trig.values()))
        by_id[body.get("id") or body["name"]] = body
    for trig_id, out in (response.get("trigger_results") or {}).items():
        spec: dict[str, Any] = by_id.get(trig_id) or next(
            (b for b in by_id.values() if b["name"] == out.get("name")), {})
        result = TriggerResult(out.get("name", trig_id), str(spec.get("severity", "")))
        if "agg_result_buckets" in out:
            # each value is {"agg_alert_content": {"bucket_keys": [...], ...}} (common-utils AggregationResultBucket)
            result.entities = [_entity(b.get("agg_alert_content", b).get("bucket_keys"))
                               for b in out["agg_result_buckets"].values()]
        elif "triggeredDocs" in out:
            result.entities = [str(doc).split("|", 1)[0] for doc in out["triggeredDocs"]]
        results.append(result)
    return results


# -------------------------------------------------------------------- core


def _render(cluster: Cluster, query: dict[str, Any], period_end: dt.datetime) -> dict[str, Any]:
    millis = int(period_end.timestamp() * 1000)
    res = cluster.request("POST", "/_render/template", body={
        "source": json.dumps(query),
        "params": {"period_end": millis, "period_start": millis - 60_000},
    })
    rendered: dict[str, Any] = res["template_output"]
    return rendered


def _run_core(cluster: Cluster, monitor: dict[str, Any], period_end: dt.datetime) -> MonitorRun:
    started = dt.datetime.now()
    results: list[TriggerResult] = []
    spec_input = monitor["inputs"][0]
    if "doc_level_input" in spec_input:
        doc_input = spec_input["doc_level_input"]
        indices = ",".join(doc_input["indices"])
        for trig in monitor["triggers"]:
            body = trig["document_level_trigger"]
            hits: list[str] = []
            for q in doc_input["queries"]:
                res = cluster.request("POST", f"/{indices}/_search", body={
                    "size": 1000, "_source": False,
                    "query": {"query_string": {"query": q["query"]}}})
                hits += [h["_id"] for h in res["hits"]["hits"]]
            results.append(TriggerResult(body["name"], str(body["severity"]), sorted(set(hits))))
        return MonitorRun(CORE, results, (dt.datetime.now() - started).total_seconds() * 1000)

    search = spec_input["search"]
    query = _render(cluster, search["query"], period_end)
    indices = ",".join(search["indices"])
    for trig in monitor["triggers"]:
        body = trig["bucket_level_trigger"]
        cond = body["condition"]
        q = copy.deepcopy(query)
        parent = q["aggregations"][cond["parent_bucket_path"]]
        parent.setdefault("aggs", {})["_pacsguard_trigger"] = {"bucket_selector": {
            "buckets_path": cond["buckets_path"], "script": cond["script"]}}
        entities: list[str] = []
        while True:
            res = cluster.request("POST", f"/{indices}/_search", params={"ignore_unavailable": "true"}, body=q)
            agg = res["aggregations"][cond["parent_bucket_path"]]
            entities += [_entity(b["key"]) for b in agg["buckets"]]
            after = agg.get("after_key")
            # page on: the selector may empty a page while more keys follow
            if not after or after == parent["composite"].get("after"):
                break
            parent["composite"]["after"] = after
        results.append(TriggerResult(body["name"], str(body["severity"]), entities))
    return MonitorRun(CORE, results, (dt.datetime.now() - started).total_seconds() * 1000)
