"""A visualization spec as the search Dashboards sends for it, and its answer as rows.

Dashboards turns a panel into one search: the pattern's time range and the
panel's Lucene query (query_string) as filters, the bucket aggregations nested
outermost first, the metrics inside the innermost bucket. The same search run
here is how the tests prove a panel shows what a scenario should produce, and
how the console draws the same charts without Dashboards.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.savedobjects.spec import AggSpec, Content, VisSpec

AUTO_BUCKETS = 60  # about as many bars as Dashboards' "auto" interval draws
_INTERVALS = [("1m", 60), ("5m", 300), ("10m", 600), ("30m", 1800), ("1h", 3600), ("3h", 10800),
              ("12h", 43200), ("1d", 86400), ("7d", 604800), ("30d", 2592000)]


def auto_interval(start: dt.datetime, end: dt.datetime) -> str:
    span = max((end - start).total_seconds(), 60)
    for name, seconds in _INTERVALS:
        if span / seconds <= AUTO_BUCKETS:
            return name
    return _INTERVALS[-1][0]


def _metric_dsl(agg: AggSpec) -> dict[str, Any]:
    return {agg.type: {"field": agg.field}}


def _bucket_dsl(agg: AggSpec, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    if agg.type == "terms":
        order = {"_key": "asc"} if agg.order_by == "_key" else (
            {"_count": "desc"} if agg.order_by in ("_count", "1") else {agg.order_by: "desc"})
        return {"terms": {"field": agg.field, "size": agg.size, "order": order}}
    if agg.type == "date_histogram":
        interval = auto_interval(start, end) if agg.interval == "auto" else agg.interval
        return {"date_histogram": {"field": agg.field, "fixed_interval": interval, "min_doc_count": 1}}
    if agg.type == "filters":
        return {"filters": {"filters": {f.label: {"query_string": {"query": f.query, "analyze_wildcard": True}}
                                        for f in agg.filters}}}
    return {"geohash_grid": {"field": agg.field, "precision": agg.precision}}


def search_body(vis: VisSpec, time_field: str, start: dt.datetime, end: dt.datetime,
                extra_query: str = "") -> dict[str, Any]:
    """The search of one panel over [start, end], optionally narrowed further (a user filter)."""
    filters: list[dict[str, Any]] = [{"range": {time_field: {"gte": start.isoformat(), "lte": end.isoformat(),
                                                            "format": "strict_date_optional_time"}}}]
    for text in (vis.query, extra_query):
        if text:
            filters.append({"query_string": {"query": text, "analyze_wildcard": True}})
    metrics: dict[str, Any] = {i: _metric_dsl(a) for i, a in vis.metrics if a.type != "count"}
    aggs: dict[str, Any] = metrics
    # Nest from the innermost bucket outwards.
    for agg_id, agg in reversed(vis.buckets):
        node = _bucket_dsl(agg, start, end)
        if aggs:
            node["aggs"] = aggs
        aggs = {agg_id: node}
    body: dict[str, Any] = {"size": 0, "track_total_hits": True, "query": {"bool": {"filter": filters}}}
    if aggs:
        body["aggs"] = aggs
    return body


@dataclass(frozen=True)
class Row:
    """One leaf of the answer: the bucket keys, outermost first, and each metric by agg id."""

    keys: tuple[Any, ...]
    values: dict[str, float | None]


def _key(agg: AggSpec, bucket: dict[str, Any], name: str | None) -> Any:
    if agg.type == "filters":
        return name
    if agg.type == "date_histogram":
        return bucket.get("key_as_string") or bucket["key"]
    return bucket["key"]


def rows(vis: VisSpec, response: dict[str, Any]) -> list[Row]:
    """Flatten the nested answer into rows (what a data table shows)."""
    out: list[Row] = []

    def metrics_of(node: dict[str, Any], count: int) -> dict[str, float | None]:
        return {i: (float(count) if a.type == "count" else node.get(i, {}).get("value")) for i, a in vis.metrics}

    def walk(node: dict[str, Any], level: int, keys: tuple[Any, ...], count: int) -> None:
        if level == len(vis.buckets):
            out.append(Row(keys, metrics_of(node, count)))
            return
        agg_id, agg = vis.buckets[level]
        raw = node[agg_id]["buckets"]
        items = raw.items() if isinstance(raw, dict) else ((None, b) for b in raw)
        for name, bucket in items:
            if agg.type == "filters" and bucket["doc_count"] == 0:
                continue
            walk(bucket, level + 1, (*keys, _key(agg, bucket, name)), bucket["doc_count"])

    total = response.get("hits", {}).get("total", {})
    walk(response.get("aggregations", {}), 0, (), total.get("value", 0) if isinstance(total, dict) else total)
    return out


def run_visualization(cluster: Cluster, settings: Settings, content: Content, vis: VisSpec, start: dt.datetime,
                      end: dt.datetime, extra_query: str = "") -> list[Row]:
    """Run a panel's search against the cluster."""
    pattern = content.patterns_by_key[vis.index]
    index = settings.index(pattern.index)
    body = search_body(vis, pattern.time_field, start, end, extra_query)
    res = cluster.request("POST", f"/{index}/_search", body=body, params={"ignore_unavailable": "true"},
                          ok_missing=True) or {}
    return rows(vis, res)
