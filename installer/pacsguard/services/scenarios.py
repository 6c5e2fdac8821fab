"""Rule scenarios: event sequences with relative timestamps, loaded into a real cluster,
run through each rule's monitor, and checked against the entities expected to fire.

One isolated install per run (its own id_prefix and namespace): every case's
events go in at once, the baseline/profile jobs run once if any rule needs
them, each monitor runs once, and each case is judged on its own entities
(user names are prefixed with the case key, so cases never see each other).
`pacsguard test-rules` runs the same scenarios against any cluster, so a team
that tunes thresholds can check what still fires.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from pacsguard.core.connection import Cluster
from pacsguard.core.models import Frozen, Progress, quiet
from pacsguard.core.settings import Settings, duration_seconds
from pacsguard.engines import MonitorRun, run_monitor
from pacsguard.jobs import run_job
from pacsguard.rules.catalog import all_rules, scenario_folders
from pacsguard.rules.compiler import ESCALATED_SEVERITY, render_monitor
from pacsguard.rules.model import Rule, RuleError
from pacsguard.rules.report import Case as JunitCase
from pacsguard.rules.report import junit
from pacsguard.services.install import install, uninstall

JOB_RULE_TYPES = {"baseline", "new_value"}


class EventSpec(Frozen):
    at: str = Field(pattern=r"^-\d+[smhd]$")  # relative to now
    action: str
    user: str
    count: int = Field(default=1, ge=1, le=5000)
    every: str = "10s"  # spacing of repeated events, forward from `at` (the first one)
    days_before: int = Field(default=0, ge=0, le=90)  # repeat the same burst on each of N previous days
    outcome: str = "success"
    source_ip: str | None = None
    user_agent: str | None = None
    device_id: str | None = None
    roles: list[str] = []
    studies: int = 0  # distinct study UIDs per event
    target_user: str | None = None
    roles_changed: list[str] = []
    recipients: list[str] = []
    external: bool | None = None
    # any other generic-JSON keys of the event (docs/generic-json.md), e.g. {host: ws-01}
    extra: dict[str, Any] = {}


class Case(Frozen):
    name: str
    events: list[EventSpec] = Field(min_length=1)
    fires: list[str]
    escalated: list[str] = []


class ScenarioFile(Frozen):
    signal: str
    cases: list[Case] = Field(min_length=1)


@dataclass
class CaseResult:
    signal: str
    case: str
    expected: set[str]
    fired: set[str]
    expected_escalated: set[str]
    escalated: set[str]
    engine: str
    source: str

    @property
    def passed(self) -> bool:
        return self.expected == self.fired and self.escalated == self.expected_escalated


@dataclass
class RunReport:
    results: list[CaseResult] = field(default_factory=list)
    monitor_ms: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)


def load_scenarios(folder: Path) -> list[tuple[Path, ScenarioFile]]:
    out = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            out.append((path, ScenarioFile.model_validate(yaml.safe_load(path.read_text()))))
        except (ValidationError, yaml.YAMLError) as exc:
            raise RuleError(f"{path}: invalid scenario: {exc}") from None
    return out


def _case_key(path: Path, index: int) -> str:
    """Prefix of a case's user names: the scenario file's signal part and the case number."""
    return f"s{path.stem.split('_')[0]}c{index}"


def _uid(*parts: Any) -> str:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return "2.25." + str(int(digest[:30], 16))


def expand(spec: EventSpec, key: str, now: dt.datetime, seq: Iterator[int]) -> list[dict[str, Any]]:
    """One EventSpec -> generic-JSON events (docs/generic-json.md) with absolute timestamps."""
    start = now - dt.timedelta(seconds=duration_seconds(spec.at[1:]))
    step = dt.timedelta(seconds=duration_seconds(spec.every))
    if start + (spec.count - 1) * step > now:
        raise RuleError(f"case {key}: {spec.count} events every {spec.every} from {spec.at} run into the future")
    events = []
    for day, i in ((d, i) for d in range(spec.days_before + 1) for i in range(spec.count)):
        n = next(seq)
        event: dict[str, Any] = {
            "timestamp": (start + i * step - dt.timedelta(days=day)).isoformat(), "app": "pacsguard-scenario",
            "action": spec.action, "outcome": spec.outcome, "user": f"{key}-{spec.user}",
            "id": f"{key}-{n}",
        }
        for name in ("source_ip", "user_agent", "device_id"):
            if getattr(spec, name):
                event[name] = getattr(spec, name)
        if spec.roles:
            event["roles"] = spec.roles
        if spec.studies:
            event["studies"] = [_uid(key, n, s) for s in range(spec.studies)]
        if spec.target_user:
            event["target_user"] = f"{key}-{spec.target_user}"
        if spec.roles_changed:
            event["roles_changed"] = spec.roles_changed
        event.update({k: v for k, v in spec.extra.items() if k not in event})
        if spec.recipients:
            event["share"] = {"id": f"{key}-share-{n}", "recipients": [f"{key}-{r}" for r in spec.recipients]}
            if spec.external is not None:
                event["share"]["external"] = spec.external
        events.append(event)
    return events


def _bulk(cluster: Cluster, index: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 1000):
        lines = []
        for event in events[start:start + 1000]:
            lines.append(json.dumps({"create": {"_index": index}}))
            lines.append(json.dumps({"message": json.dumps(event)}))
        res = cluster.request("POST", "/_bulk", body="\n".join(lines) + "\n", params={"refresh": "false"})
        if res.get("errors"):
            bad = next(i for i in res["items"] if i["create"].get("error"))
            raise RuleError(f"scenario events were refused: {bad['create']['error']}")


def scenario_settings(base: Settings) -> Settings:
    suffix = uuid.uuid4().hex[:6]
    return base.model_copy(update={"id_prefix": f"{base.id_prefix}-rt{suffix}", "namespace": f"rt{suffix}"})


def run_scenarios(cluster: Cluster, base: Settings, progress: Progress = quiet,
                  only: set[str] | None = None, keep: bool = False, engine: str | None = None) -> RunReport:
    rules = {r.signal: r for r in all_rules(base)}
    files = [found for folder in scenario_folders(base) if folder.is_dir() for found in load_scenarios(folder)]
    if only:
        files = [(p, f) for p, f in files if f.signal in only]
    settings = scenario_settings(base)
    report = RunReport()
    try:
        # inside the try: an install that fails half-way is removed like a finished one
        progress(f"installing an isolated pack ({settings.id_prefix}, namespace {settings.namespace})")
        install(cluster, settings, allow_missing_plugins=True)
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        seq = iter(range(10**9))
        events: list[dict[str, Any]] = []
        for path, scen in files:
            if scen.signal not in rules:
                raise RuleError(f"{path}: no rule for signal {scen.signal}")
            for i, case in enumerate(scen.cases):
                key = _case_key(path, i)
                for spec in case.events:
                    events += expand(spec, key, now, seq)
        progress(f"loading {len(events)} scenario events through the pipeline")
        _bulk(cluster, settings.index("events_data_stream"), events)
        cluster.request("POST", f"/{settings.index('events_data_stream')},{settings.index('failures')}/_refresh")
        failed = cluster.request("GET", f"/{settings.index('failures')}/_count")["count"]
        if failed:
            sample = cluster.request("GET", f"/{settings.index('failures')}/_search", body={"size": 1})
            raise RuleError(f"{failed} scenario event(s) failed the pipeline, e.g. "
                            f"{sample['hits']['hits'][0]['_source'].get('error')}")
        needed = {rules[f.signal].detection.type for _, f in files} | {
            "new_value" for _, f in files if rules[f.signal].detection.escalate_after_new_login}
        if needed & JOB_RULE_TYPES:
            progress("running the baseline and profile jobs")
            _run_jobs(cluster, settings, now)
        for path, scen in files:
            rule = rules[scen.signal]
            # event rules look at arrival time (event.ingested): they run as of now, after the load
            as_of = dt.datetime.now(dt.timezone.utc) if rule.detection.type == "event" else now
            run = run_monitor(cluster, render_monitor(rule, settings), period_end=as_of, engine=engine)
            report.monitor_ms[rule.signal] = run.took_ms
            for i, case in enumerate(scen.cases):
                key = _case_key(path, i)
                values = None if rule.detection.entity == "user.name" else _case_values(cluster, settings, key, rule)
                report.results.append(_judge(rule, case, key, run, path, values))
    finally:
        if not keep:
            uninstall(cluster, settings, purge=True)
    return report


def junit_report(report: RunReport) -> str:
    """JUnit XML: one test case per scenario case, a failure saying expected vs fired."""
    cases = [JunitCase(f"test-rules {r.engine}", r.case, f"{r.source}.{r.signal}",
                  None if r.passed else f"expected {sorted(r.expected)}, fired {sorted(r.fired)}"
                  + (f"; escalated expected {sorted(r.expected_escalated)}, got {sorted(r.escalated)}"
                     if r.escalated != r.expected_escalated else ""),
                  seconds=report.monitor_ms.get(r.signal, 0.0) / 1000, file=r.source)
             for r in report.results]
    return junit("pacsguard test-rules", cases)


def _run_jobs(cluster: Cluster, settings: Settings, now: dt.datetime) -> None:
    for job in ("baselines", "profiles"):
        run_job(cluster, settings, job, now=now)
    cluster.request("POST", f"/{settings.index('baselines')},{settings.index('profiles')}/_refresh")


def _case_values(cluster: Cluster, settings: Settings, key: str, rule: Rule) -> set[str]:
    """The values of the rule's entity field in this case's events, as the pipeline indexed them."""
    field_ = rule.detection.entity
    res = cluster.request("POST", f"/{settings.index('events_data_stream')}/_search", body={
        "size": 0, "query": {"prefix": {"event.id": f"{key}-"}},
        "aggs": {"v": {"terms": {"field": field_, "size": 1000}}}})
    return {str(b["key"]) for b in res["aggregations"]["v"]["buckets"]}


def _judge(rule: Rule, case: Case, key: str, run: MonitorRun, path: Path,
           values: set[str] | None = None) -> CaseResult:
    """Which of the case's entities fired. The entity is a bucket's first key (an event
    rule's further keys, action and target, only split its alerts). values: for an entity other
    than user.name, the case's own values of it (a user name carries the case key)."""
    mine = f"{key}-"

    def entities(severity: str | None = None) -> set[str]:
        return {b.keys[0] for t in run.triggers if severity is None or t.severity == severity for b in t.buckets}

    fired = entities()
    escalated = entities(ESCALATED_SEVERITY) if rule.detection.escalate_after_new_login else set()
    if values is not None:
        strip = {e for e in fired if e in values}
    else:
        strip = {e[len(mine):] for e in fired if e.startswith(mine)}
    esc = {e[len(mine):] for e in escalated if e.startswith(mine)}
    return CaseResult(rule.signal, case.name, set(case.fires), strip, set(case.escalated), esc, run.engine,
                      str(path.name))
