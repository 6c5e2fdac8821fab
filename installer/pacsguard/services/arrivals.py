"""Why events raise nothing: the newest event arrived stamped too long ago for the rules' windows.

Threshold, sequence and baseline rules look at the events whose @timestamp falls in their window
before each run, so an event sent long after it happened (a back-dated example, a replayed log,
a shipper that caught up) is indexed, feeds the baselines and profiles, and raises nothing.
`status` says so for the newest event received, naming the rules whose window it missed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings, duration_seconds
from pacsguard.rules.compiler import compile_rules, rule_window


def _when(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def age_text(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h" if days else f"{hours}h {rest // 60}m" if hours else f"{rest // 60}m {rest % 60}s"


def late_event(cluster: Cluster, settings: Settings) -> dict[str, Any] | None:
    """The newest event received, when it was stamped too long before its arrival for some windowed rule
    to see it (else None): its times, how late it was, and the signals that missed it."""
    res = cluster.request("POST", f"/{settings.index('events_data_stream')}/_search", ok_missing=True, body={
        "size": 1, "sort": [{"event.ingested": {"order": "desc", "unmapped_type": "date"}}],
        "_source": ["@timestamp", "event.ingested"], "query": {"exists": {"field": "event.ingested"}}}) or {}
    hits = res.get("hits", {}).get("hits", [])
    if not hits:
        return None
    src = hits[0]["_source"]
    stamped, arrived = _when(src.get("@timestamp")), _when((src.get("event") or {}).get("ingested"))
    if stamped is None or arrived is None:
        return None
    late = (arrived - stamped).total_seconds()
    windows = {c.signal: duration_seconds(w) for c in compile_rules(settings)
               if c.rule.enabled and c.rule.detection.type != "event" and (w := rule_window(c.rule, settings))}
    missed = sorted(s for s, w in windows.items() if late > w)
    if not missed:
        return None
    return {"timestamp": src["@timestamp"], "ingested": src["event"]["ingested"], "late_seconds": round(late),
            "missed_by": missed, "windows": {s: windows[s] for s in missed}}


def late_text(info: dict[str, Any]) -> str:
    return (f"the newest event received ({info['ingested']}) is stamped {info['timestamp']}, "
            f"{age_text(info['late_seconds'])} before it arrived: outside the window of rule(s) "
            f"{', '.join(info['missed_by'])}, so those rules never see it (signal 3 judges by arrival time). "
            "Send events as they happen, with current timestamps.")
