"""scope: what the alert's entity touched in the evidence window.

It reads exactly the events `preserve` puts in the bundle (the same query and window): the
entity's own and those naming it (related.user / related.ip), so the two agree on the count.

Distinct studies viewed / exported / shared / deleted (counts and UIDs), distinct
patient hashes, export destinations, share recipients (external marked), source IPs
with their countries and devices, and (useful for an IP entity) the accounts seen.
Every list is a composite aggregation paged to the end (docs/design.md: never an
unbounded terms aggregation), so the counts are exact.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.services.response.context import load_alert, new_record, record
from pacsguard.services.response.preserve import entity_query

STUDY_ACTIONS: dict[str, tuple[str, ...]] = {
    "viewed": ("study-view",),
    "exported": ("study-export", "study-download"),
    "shared": ("share-create",),
    "deleted": ("study-delete",),
}
EXPORT_ACTIONS = STUDY_ACTIONS["exported"]


def composite_buckets(cluster: Cluster, index: str, query: dict[str, Any], sources: list[dict[str, Any]],
                      page: int, aggs: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every bucket of a composite aggregation (with optional sub-aggregations), page after page."""
    after: dict[str, Any] | None = None
    while True:
        comp: dict[str, Any] = {"size": page, "sources": sources}
        if after:
            comp["after"] = after
        agg_body: dict[str, Any] = {"composite": comp, **({"aggs": aggs} if aggs else {})}
        res = cluster.request("POST", f"/{index}/_search", ok_missing=True,
                              body={"size": 0, "query": query, "aggs": {"c": agg_body}}) or {}
        agg = res.get("aggregations", {}).get("c", {})
        buckets = agg.get("buckets", [])
        yield from buckets
        after = agg.get("after_key")
        if not buckets or not after:
            return


def _terms(name: str, field: str, missing: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"field": field}
    if missing:
        body["missing_bucket"] = True
    return {name: {"terms": body}}


def _with(query: dict[str, Any], *clauses: dict[str, Any]) -> dict[str, Any]:
    out = {"bool": dict(query["bool"])}
    out["bool"]["filter"] = [*query["bool"]["filter"], *clauses]
    return out


def _external(recipient: str, flagged: bool, internal_domains: list[str]) -> bool:
    """Per recipient when the installation names its domains, else the share's own flag."""
    if internal_domains and "@" in recipient:
        domain = recipient.rsplit("@", 1)[1].lower()
        return not any(domain == d.lower() or domain.endswith("." + d.lower()) for d in internal_domains)
    return flagged


def scope(cluster: Cluster, settings: Settings, alert_id: str, before: str | None = None,
          after: str | None = None, now: dt.datetime | None = None, by: str | None = None) -> dict[str, Any]:
    """The scope report; with `by`, the run is recorded on the alert (who looked, what was found)."""
    report = _scope(cluster, settings, alert_id, before, after, now)
    if by:
        ctx = load_alert(cluster, settings, alert_id)
        d = report["distinct_studies"]["count"]
        ext = sum(1 for r in report["share_recipients"] if r["external"])
        record(cluster, settings, ctx, new_record(
            ctx, "scope", "events", "scope", ctx.entity, by, dry_run=False, result="done", changed=False,
            detail=(f"{report['events']} event(s), {d} distinct studies "
                    f"({report['studies']['exported']['count']} exported, {report['studies']['shared']['count']} "
                    f"shared), {report['patients']['count']} patients, {ext} external recipient(s)"),
            data={"from": report["window"]["from"], "to": report["window"]["to"]}))
    return report


def _scope(cluster: Cluster, settings: Settings, alert_id: str, before: str | None,
           after: str | None, now: dt.datetime | None) -> dict[str, Any]:
    ctx = load_alert(cluster, settings, alert_id)
    start, end = ctx.window(settings, before, after, now)
    index = settings.index("events_data_stream")
    page = settings.detection.composite_page_size
    cluster.request("POST", f"/{index}/_refresh", ok_missing=True)
    # the evidence bundle's query (preserve.py): the same events, so scope and bundle count the same
    base = entity_query(ctx, start, end)

    def buckets(sources: list[dict[str, Any]], *clauses: dict[str, Any]) -> list[dict[str, Any]]:
        return list(composite_buckets(cluster, index, _with(base, *clauses) if clauses else base, sources, page))

    studies: dict[str, dict[str, Any]] = {}
    for what, actions in STUDY_ACTIONS.items():
        uids = sorted(b["key"]["uid"] for b in buckets([_terms("uid", "pacs.study.uids")],
                                                       {"terms": {"event.action": list(actions)}}))
        studies[what] = {"count": len(uids), "uids": uids}
    every_study = sorted({u for s in studies.values() for u in s["uids"]})
    patients = sorted(b["key"]["p"] for b in buckets([_terms("p", "pacs.patient.id_hash")]))
    destinations = [{"destination": b["key"]["d"], "events": b["doc_count"]}
                    for b in buckets([_terms("d", "pacs.export.destination")],
                                     {"terms": {"event.action": list(EXPORT_ACTIONS)}})]
    recipients: dict[str, dict[str, Any]] = {}
    for b in buckets([_terms("r", "pacs.share.recipients"), _terms("x", "pacs.share.external", True)],
                     {"term": {"event.action": "share-create"}}):
        r = recipients.setdefault(b["key"]["r"], {"recipient": b["key"]["r"], "shares": 0, "flagged": False})
        r["shares"] += b["doc_count"]
        r["flagged"] = r["flagged"] or b["key"]["x"] in (True, "true", 1)
    share_list = [{"recipient": r["recipient"], "shares": r["shares"],
                   "external": _external(r["recipient"], r["flagged"], settings.internal_domains)}
                  for r in sorted(recipients.values(), key=lambda r: r["recipient"])]
    ips: dict[str, dict[str, Any]] = defaultdict(lambda: {"countries": set(), "devices": set(), "events": 0})
    for b in buckets([_terms("ip", "source.ip"), _terms("c", "source.geo.country_iso_code", True),
                      _terms("d", "device.id", True)]):
        item = ips[b["key"]["ip"]]
        item["events"] += b["doc_count"]
        if b["key"]["c"]:
            item["countries"].add(b["key"]["c"])
        if b["key"]["d"]:
            item["devices"].add(b["key"]["d"])
    accounts = [{"user": b["key"]["u"], "events": b["doc_count"]} for b in buckets([_terms("u", "user.name")])]
    total = (cluster.request("POST", f"/{index}/_count", body={"query": base}, ok_missing=True) or {}).get("count", 0)
    return {
        "alert_id": ctx.id, "signal": ctx.signal, "entity": {"field": ctx.entity_field, "value": ctx.entity},
        "window": {"from": start, "to": end}, "events": total,
        "studies": studies, "distinct_studies": {"count": len(every_study), "uids": every_study},
        "patients": {"count": len(patients), "id_hashes": patients},
        "export_destinations": destinations,
        "share_recipients": share_list,
        "source_ips": [{"ip": ip, "events": v["events"], "countries": sorted(v["countries"]),
                        "devices": sorted(v["devices"])} for ip, v in sorted(ips.items())],
        "accounts": accounts,
    }


def scope_text(report: dict[str, Any], verbose: bool = True) -> str:
    e = report["entity"]
    lines = [f"scope of {report['alert_id']} (signal {report['signal']}): {e['field']} {e['value']}",
             f"window {report['window']['from']} .. {report['window']['to']}: {report['events']} event(s)", ""]
    for what, s in report["studies"].items():
        lines.append(f"studies {what:<9} {s['count']:>4}" + (f"  {', '.join(s['uids'])}" if verbose and s["uids"]
                                                              else ""))
    lines.append(f"distinct studies  {report['distinct_studies']['count']:>4}")
    lines.append(f"patients (hashed) {report['patients']['count']:>4}")
    lines.append("export destinations: " + (", ".join(f"{d['destination']} ({d['events']})"
                                                      for d in report["export_destinations"]) or "none"))
    lines.append("share recipients: " + (", ".join(
        f"{r['recipient']}{' [EXTERNAL]' if r['external'] else ''} ({r['shares']})"
        for r in report["share_recipients"]) or "none"))
    lines.append("source IPs:")
    for ip in report["source_ips"] or []:
        lines.append(f"  {ip['ip']:<39} {ip['events']:>5} event(s)  countries {','.join(ip['countries']) or '-'}"
                     f"  devices {','.join(ip['devices']) or '-'}")
    if not report["source_ips"]:
        lines.append("  none")
    if report["entity"]["field"] != "user.name":
        lines.append("accounts: " + ", ".join(f"{a['user']} ({a['events']})" for a in report["accounts"]))
    return "\n".join(lines)
