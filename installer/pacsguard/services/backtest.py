"""Backtest: what the rules would have raised over a past period, and how that compares with labels.

The jobs are replayed as of each job step, the same jobs `watch` runs (the directory,
where it has a source, naming the accounts that events gave by id; baselines and profiles
rewritten as the cluster would have had them then), and every rule's compiled monitor runs with the
pack's core engine as of each step. Consecutive steps on which a rule's trigger holds
for the same bucket make one alert (Alerting's lifecycle: it stays ACTIVE while the
condition holds), dated at its first step. Against a labels file (`pacsguard
simulate`), an alert matches a label when signal and entity match and its first time
lies within the label's window plus the rule's window (and one step, the time it
takes to be seen).

Signal 3 is an event rule on arrival time (event.ingested) live; history has only
one arrival time (the load), so the backtest reads it on @timestamp over one step.
Afterwards the jobs run once as of now, so a live `watch` is not left with old state.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.models import Progress, quiet
from pacsguard.core.settings import Settings, duration_seconds
from pacsguard.engines import core
from pacsguard.jobs import run_job
from pacsguard.jobs.profiles import default_lookback
from pacsguard.jobs.schedule import all_jobs
from pacsguard.rules.compiler import ESCALATED_SUFFIX, compile_rules, rule_window

ESCALATION_SIGNAL = "4c"
KINDS = ("attack", "near-miss", "benign-unusual")


@dataclass(frozen=True)
class LabelRow:
    signal: str
    entity: str
    start: dt.datetime
    end: dt.datetime
    kind: str
    note: str = ""


@dataclass
class Alert:
    signal: str
    rule: str
    keys: tuple[str, ...]
    first: dt.datetime
    last: dt.datetime
    matched: str | None = None  # the kind of the label it matched, None: unlabelled

    @property
    def entity(self) -> str:
        return self.keys[0]


@dataclass
class Report:
    start: dt.datetime
    end: dt.datetime
    step_seconds: int
    users: int
    alerts: list[Alert] = field(default_factory=list)
    labels: list[tuple[LabelRow, bool]] = field(default_factory=list)  # (label, detected)
    steps: int = 0
    job_runs: int = 0

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400

    def as_dict(self) -> dict[str, Any]:
        per_day: dict[str, dict[str, int]] = {}
        for a in self.alerts:
            day = a.first.date().isoformat()
            per_day.setdefault(a.signal, {}).setdefault(day, 0)
            per_day[a.signal][day] += 1
        out: dict[str, Any] = {
            "from": _iso(self.start), "to": _iso(self.end), "step_seconds": self.step_seconds, "steps": self.steps,
            "job_runs": self.job_runs, "users": self.users, "days": round(self.days, 3),
            "alerts": [{"signal": a.signal, "entity": a.entity, "keys": list(a.keys), "first": _iso(a.first),
                        "last": _iso(a.last), "label": a.matched} for a in self.alerts],
            "alerts_per_rule_per_day": per_day,
        }
        if self.labels:
            out["scores"] = self.scores()
            out["missed"] = [_label_dict(lb) for lb, hit in self.labels if lb.kind == "attack" and not hit]
            out["near_misses_fired"] = [_label_dict(lb) for lb, hit in self.labels if lb.kind == "near-miss" and hit]
        return out

    def scores(self) -> dict[str, Any]:
        by_kind = Counter(a.matched or "unlabelled" for a in self.alerts)
        attacks = [hit for lb, hit in self.labels if lb.kind == "attack"]
        false = by_kind["unlabelled"] + by_kind["near-miss"]
        user_days = self.users * self.days
        per_signal = {}
        for signal in sorted({lb.signal for lb, _ in self.labels if lb.kind == "attack"}):
            hits = [hit for lb, hit in self.labels if lb.kind == "attack" and lb.signal == signal]
            per_signal[signal] = {"attacks": len(hits), "detected": sum(hits)}
        return {
            "attacks": len(attacks), "detected": sum(attacks),
            "recall": round(sum(attacks) / len(attacks), 4) if attacks else None,
            "alerts": len(self.alerts), "true_alerts": by_kind["attack"],
            "benign_unusual_alerts": by_kind["benign-unusual"], "near_miss_alerts": by_kind["near-miss"],
            "false_alerts": false,
            # an alert on a labelled benign-unusual event (travel) is right to fire: it is not counted against
            "precision": round((by_kind["attack"] + by_kind["benign-unusual"]) / len(self.alerts), 4)
            if self.alerts else None,
            "user_days": round(user_days, 1),
            "false_per_1000_user_days": round(1000 * false / user_days, 3) if user_days else None,
            "per_signal": per_signal,
        }


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _label_dict(lb: LabelRow) -> dict[str, Any]:
    return {"signal": lb.signal, "entity": lb.entity, "start": _iso(lb.start), "end": _iso(lb.end),
            "kind": lb.kind, "note": lb.note}


def parse_time(text: str, what: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PacsguardError(f"{what}: {text!r} is not an ISO 8601 time (e.g. 2025-03-14T07:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def load_labels(path: Path) -> list[LabelRow]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            row = LabelRow(str(d["signal"]), str(d["entity"]), parse_time(d["start"], f"{path}:{n}: start"),
                           parse_time(d["end"], f"{path}:{n}: end"), str(d["kind"]), str(d.get("note", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise PacsguardError(f"{path}:{n}: not a label (signal, entity, start, end, kind): {exc}") from None
        if row.kind not in KINDS:
            raise PacsguardError(f"{path}:{n}: kind {row.kind!r} is not one of {', '.join(KINDS)}")
        rows.append(row)
    return rows


def backtest_settings(settings: Settings, step_seconds: int) -> Settings:
    """Signal 3 on @timestamp over at least one step (see the module docstring)."""
    window = max(step_seconds, duration_seconds(settings.detection.event_rule_window))
    detection = settings.detection.model_copy(update={"event_rule_time_field": settings.detection.time_field,
                                                      "event_rule_window": f"{window}s"})
    return settings.model_copy(update={"detection": detection})


def backtest(cluster: Cluster, settings: Settings, start: dt.datetime, end: dt.datetime, step: str = "5m",
             jobs_every: str | None = None, labels: list[LabelRow] | None = None, users: int | None = None,
             progress: Progress = quiet) -> Report:
    step_s = duration_seconds(step)
    jobs_s = duration_seconds(jobs_every) if jobs_every else step_s
    if step_s < 60:
        raise PacsguardError(f"--step {step}: at least 1m (the shortest rule schedule)")
    if jobs_s % step_s:
        raise PacsguardError(f"--jobs-every {jobs_every}: a multiple of --step {step}")
    if end <= start:
        raise PacsguardError(f"--to {_iso(end)} is not after --from {_iso(start)}")
    bt = backtest_settings(settings, step_s)
    compiled = compile_rules(bt)
    windows = {c.signal: duration_seconds(rule_window(c.rule, bt)) for c in compiled}
    report = Report(start, end, step_s, users if users is not None else _count_users(cluster, settings, start, end))
    lookback = default_lookback(settings, jobs_s)
    # every job watch runs, the directory first where it has a source (it names the accounts of
    # id-only events before the rules read them, as it does live)
    jobs = all_jobs(settings)
    open_alerts: dict[tuple[str, tuple[str, ...]], Alert] = {}
    t = start
    total = int((end - start).total_seconds() // step_s)
    while t <= end:
        if report.steps % (jobs_s // step_s) == 0:
            for job in jobs:
                run_job(cluster, settings, job, now=t, lookback_seconds=lookback if job == "profiles" else None)
            cluster.request("POST", f"/{settings.index('baselines')},{settings.index('profiles')},"
                            f"{settings.index('directory')},{settings.index('events_data_stream')}/_refresh",
                            params={"ignore_unavailable": "true"})
            report.job_runs += 1
        seen: set[tuple[str, tuple[str, ...]]] = set()
        for c in compiled:
            if not c.rule.enabled:
                continue
            run = core.run(cluster, c.monitor, t)
            for trig in run.triggers:
                signal = ESCALATION_SIGNAL if trig.name.endswith(ESCALATED_SUFFIX) else c.signal
                for b in trig.buckets:
                    key = (signal, b.keys)
                    seen.add(key)
                    if key in open_alerts:
                        open_alerts[key].last = t
                    else:
                        alert = Alert(signal, c.signal, b.keys, t, t)
                        open_alerts[key] = alert
                        report.alerts.append(alert)
        # an alert whose condition no longer holds is over (COMPLETED); the next trigger is a new alert
        for key in [k for k in open_alerts if k not in seen]:
            del open_alerts[key]
        report.steps += 1
        if report.steps % 288 == 0:
            progress(f"{_iso(t)}: step {report.steps}/{total + 1}, {len(report.alerts)} alert(s) so far")
        t += dt.timedelta(seconds=step_s)
    if labels is not None:
        _match(report, labels, windows, step_s)
    progress("running the jobs once as of now, so the live state is current again")
    for job in jobs:
        run_job(cluster, settings, job)
    return report


def _match(report: Report, labels: list[LabelRow], windows: dict[str, int], step_s: int) -> None:
    rule_of = {ESCALATION_SIGNAL: "4a"}

    def matches(a: Alert, lb: LabelRow) -> bool:
        slack = dt.timedelta(seconds=windows.get(rule_of.get(lb.signal, lb.signal), 0) + step_s)
        return a.signal == lb.signal and a.entity == lb.entity and lb.start <= a.first <= lb.end + slack

    rank = {"attack": 0, "benign-unusual": 1, "near-miss": 2}
    for a in report.alerts:
        kinds = sorted((lb.kind for lb in labels if matches(a, lb)), key=rank.__getitem__)
        a.matched = kinds[0] if kinds else None
    report.labels = [(lb, any(matches(a, lb) for a in report.alerts)) for lb in labels]


def _count_users(cluster: Cluster, settings: Settings, start: dt.datetime, end: dt.datetime) -> int:
    """Accounts that signed in successfully in the period: the user-days a false-alert rate is per."""
    body = {"size": 0, "query": {"bool": {"filter": [
        {"term": {"event.action": "user-login"}}, {"term": {"event.outcome": "success"}},
        {"range": {"@timestamp": {"gte": _iso(start), "lte": _iso(end)}}}]}},
        "aggs": {"users": {"cardinality": {"field": "user.name"}}}}
    res = cluster.request("POST", f"/{settings.index('events_data_stream')}/_search", body=body)
    return int(res["aggregations"]["users"]["value"])


def as_text(report: Report) -> str:
    data = report.as_dict()
    head = (f"backtest {data['from']} .. {data['to']}: {report.steps} steps of {report.step_seconds}s, "
            f"{report.job_runs} job runs, {report.users} users, {data['days']} days")
    lines = [head, "", "alerts per rule per day:"]
    for signal, days in sorted(data["alerts_per_rule_per_day"].items()):
        lines.append(f"  {signal:>3}  " + ", ".join(f"{d}: {n}" for d, n in sorted(days.items())))
    if not report.alerts:
        lines.append("  (none)")
    lines += ["", "alerts (signal, entity, first time, label):"]
    for a in sorted(report.alerts, key=lambda x: x.first):
        tag = a.matched or ("FALSE" if report.labels else "-")
        lines.append(f"  {a.signal:>3}  {','.join(a.keys):<40} {_iso(a.first)}  {tag}")
    if report.labels:
        s = data["scores"]
        precision = (f"precision: {s['precision']} ({s['true_alerts']} on attacks, {s['benign_unusual_alerts']} on "
                     f"labelled benign-unusual activity, {s['near_miss_alerts']} on near-misses, "
                     f"{s['false_alerts'] - s['near_miss_alerts']} unlabelled)")
        false = (f"false alerts: {s['false_alerts']} over {s['user_days']} user-days = "
                 f"{s['false_per_1000_user_days']} per 1,000 user-days")
        per_signal = "per signal (attacks detected): " + ", ".join(
            f"{k} {v['detected']}/{v['attacks']}" for k, v in s["per_signal"].items())
        lines += ["", f"recall (attacks): {s['detected']}/{s['attacks']} = {s['recall']}", precision, false,
                  per_signal]
        for m in data["missed"]:
            lines.append(f"  MISSED {m['signal']} {m['entity']} {m['start']} ({m['note']})")
        for m in data["near_misses_fired"]:
            lines.append(f"  NEAR-MISS FIRED {m['signal']} {m['entity']} {m['start']} ({m['note']})")
    return "\n".join(lines)
