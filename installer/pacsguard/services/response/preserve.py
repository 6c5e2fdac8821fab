"""preserve: the evidence bundle of an alert (response/evidence.py), recorded as an action."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.response.actions import ActionRecord, now_iso
from pacsguard.response.evidence import Bundle, write_bundle
from pacsguard.services.response.context import AlertContext, load_alert, new_record, record

SCROLL_KEEP = "2m"
PAGE = 1000


def entity_query(ctx: AlertContext, start: str, end: str) -> dict[str, Any]:
    """The entity's events in the window, as actor or as a related user or IP: the evidence, and the scope."""
    related = {"user.name": "related.user", "source.ip": "related.ip"}.get(ctx.entity_field)
    fields = [ctx.entity_field] + ([related] if related else [])
    return {"bool": {
        "filter": [{"range": {"@timestamp": {"gte": start, "lte": end}}}],
        "should": [{"term": {f: ctx.entity}} for f in fields], "minimum_should_match": 1}}


def scroll_events(cluster: Cluster, index: str, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every matching event in time order, a page at a time (the scroll is cleared at the end)."""
    res = cluster.request("POST", f"/{index}/_search", params={"scroll": SCROLL_KEEP}, ok_missing=True, body={
        "size": PAGE, "query": query, "sort": [{"@timestamp": "asc"}, "_doc"]}) or {}
    scroll_id = res.get("_scroll_id")
    try:
        while True:
            hits = res.get("hits", {}).get("hits", [])
            if not hits:
                return
            for h in hits:
                yield {"_index": h["_index"], "_id": h["_id"], **h["_source"]}
            res = cluster.request("POST", "/_search/scroll", body={"scroll": SCROLL_KEEP, "scroll_id": scroll_id})
            scroll_id = res.get("_scroll_id", scroll_id)
    finally:
        if scroll_id:
            cluster.request("DELETE", "/_search/scroll", body={"scroll_id": scroll_id}, ok_missing=True)


def rule_summary(ctx: AlertContext) -> dict[str, Any]:
    rule = ctx.rule
    return {"id": str(rule.id), "signal": rule.signal, "name": rule.name, "version": rule.version,
            "content_hash": rule.content_hash(), "file": rule.path.name if rule.path else None,
            "severity": rule.severity, "guide": rule.guide.model_dump()}


def preserve(cluster: Cluster, settings: Settings, alert_id: str, by: str, out: Path | None = None,
             before: str | None = None, after: str | None = None,
             now: dt.datetime | None = None) -> tuple[Bundle, ActionRecord]:
    ctx = load_alert(cluster, settings, alert_id)
    collected_at = now_iso(now)
    start, end = ctx.window(settings, before, after, now)
    index = settings.index("events_data_stream")
    query: dict[str, Any] = {"index": index, "query": entity_query(ctx, start, end), "window": {"from": start, "to": end},
             "entity": {"field": ctx.entity_field, "value": ctx.entity}}
    stamp = collected_at.replace(":", "").replace("-", "").split(".")[0]
    path = out or Path(f"evidence-{ctx.id}-{stamp}.zip")
    cluster.request("POST", f"/{index}/_refresh", ok_missing=True)
    bundle = write_bundle(path, alert=ctx.document, rule=rule_summary(ctx), query=query,
                          events=scroll_events(cluster, index, query["query"]),
                          collected_at=collected_at, collected_by=by)
    rec = record(cluster, settings, ctx, new_record(
        ctx, "preserve", "evidence", "bundle", str(path), by, dry_run=False, result="done", changed=True,
        detail=f"{bundle.events} event(s) from {start} to {end} in {path.name}, zip sha256 {bundle.sha256}",
        data={"path": str(path.resolve()), "zip_sha256": bundle.sha256, "sha256": bundle.whole_sha256,
              "events": bundle.events, "from": start, "to": end}))
    return bundle, rec
