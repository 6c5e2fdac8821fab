"""Run a monitor body with OpenSearch Alerting's dry run (`monitors/_execute?dryrun=true`)."""

from __future__ import annotations

import time
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.engines.result import ALERTING, Bucket, MonitorRun, TriggerResult, key_values


def parse_execute_response(monitor: dict[str, Any], res: dict[str, Any], took_ms: float) -> MonitorRun:
    """Read trigger_results of an _execute response into the engine-neutral MonitorRun.

    Bucket-level triggers list agg_result_buckets, each value holding
    {"agg_alert_content": {"bucket_keys": [...], "bucket": {...}}} (common-utils
    AggregationResultBucket); doc-level triggers list triggeredDocs as
    "<docId>|<index>".
    """
    specs: dict[str, dict[str, Any]] = {}
    for trig in monitor.get("triggers", []):
        body = next(iter(trig.values()))
        specs[str(body.get("id") or body["name"])] = body
    results: list[TriggerResult] = []
    for trig_id, out in (res.get("trigger_results") or {}).items():
        spec = specs.get(trig_id) or next((b for b in specs.values() if b["name"] == out.get("name")), {})
        result = TriggerResult(str(out.get("name", trig_id)), str(spec.get("severity", "")), trigger_id=trig_id)
        if out.get("error"):
            result.name = f"{result.name} (error: {out['error']})"
        for item in (out.get("agg_result_buckets") or {}).values():
            content = item.get("agg_alert_content", item)
            bucket = content.get("bucket") or {}
            # the key map names each source; bucket_keys is in Alerting's hash-map order
            result.buckets.append(Bucket(key_values(bucket.get("key") or content.get("bucket_keys")),
                                         {"doc_count": bucket.get("doc_count")}))
        for doc in out.get("triggeredDocs") or []:
            doc_id, _, _index = str(doc).partition("|")
            result.buckets.append(Bucket((doc_id,)))
        results.append(result)
    error = (res.get("input_results") or {}).get("error")
    return MonitorRun(ALERTING, results, took_ms, str(error) if error else None)


def dry_run(cluster: Cluster, monitor: dict[str, Any]) -> MonitorRun:
    started = time.monotonic()
    res = cluster.request("POST", "/_plugins/_alerting/monitors/_execute", params={"dryrun": "true"}, body=monitor)
    return parse_execute_response(monitor, res, (time.monotonic() - started) * 1000)


def monitor_runs(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """When Alerting last ran each monitor, from its stats: {monitor id: {"last_run": epoch ms,
    "on_time": bool}} (the scheduler's own record; a monitor that never ran is absent)."""
    res = cluster.request("GET", "/_plugins/_alerting/stats", ok_missing=True) or {}
    out: dict[str, dict[str, Any]] = {}
    for node in (res.get("nodes") or {}).values():
        for monitor_id, info in (node.get("jobs_info") or {}).items():
            last = info.get("last_execution_time")
            if isinstance(last, (int, float)) and last > out.get(monitor_id, {}).get("last_run", -1):
                out[monitor_id] = {"last_run": int(last), "on_time": bool(info.get("running_on_time"))}
    return out
