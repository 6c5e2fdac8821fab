"""Rules a team owns, on a real node: a custom rule outside the pack (validated, installed, its
scenarios on both engines, uninstalled exactly), exceptions that expire by themselves (both
engines), and a snooze that records and delivers nothing until it ends."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from alert_receivers import Hook
from pacsguard.cli import app
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.engines import ALERTING, CORE, run_monitor
from pacsguard.engines.alerts import AlertStore
from pacsguard.packobjects import KINDS
from pacsguard.rules.compiler import compile_rules
from pacsguard.services.exceptions import add, entries
from pacsguard.services.install import desired_objects, install, make_plan, uninstall
from pacsguard.services.rulecheck import validate
from pacsguard.services.scenarios import EventSpec, _bulk, expand, run_scenarios
from pacsguard.services.watch import Watcher
from teamrules import SIGMA_IN, SIGNAL, team_folder
from testnode import make_settings
from typer.testing import CliRunner

pytestmark = pytest.mark.cluster


def _team_settings(url: str, prefix: str, folder: Path | None, **extra: Any) -> Settings:
    return make_settings(url, prefix, "team", rules={"folders": [{"path": str(folder)}] if folder else []}, **extra)


@pytest.mark.parametrize("engine", [CORE, ALERTING])
def test_custom_rule_scenarios_pass(request: pytest.FixtureRequest, tmp_path: Path, engine: str) -> None:
    url = request.getfixturevalue("alerting_url" if engine == ALERTING else "cluster_url")
    settings = _team_settings(url, "pgteam", team_folder(tmp_path))
    v = validate(settings)
    assert v.ok, v.problems
    assert [r.signal for r in v.rules if r.custom] == [SIGNAL]
    assert "observer.hostname" not in json.dumps([c.monitor for c in compile_rules(settings) if not c.rule.custom])
    report = run_scenarios(Cluster.connect(settings.cluster), settings, only={SIGNAL}, engine=engine)
    assert [(r.case, r.passed, sorted(r.fired)) for r in report.results] == [
        ("a deletion on a reading workstation fires", True, ["ws-0719"]),
        ("a deletion on a server does not", True, []),
        ("an administrator's deletion on a workstation does not", True, [])]
    assert {r.engine for r in report.results} == {"alerting-dryrun" if engine == ALERTING else "core-search"}


def test_custom_rule_installed_and_uninstalled_exactly(alerting_url: str, tmp_path: Path, unique: str) -> None:
    folder = team_folder(tmp_path)
    settings = _team_settings(alerting_url, f"pgtm{unique}", folder)
    cluster = Cluster.connect(settings.cluster)
    monitor_id = f"{settings.scope}-rule-{SIGNAL}"
    try:
        install(cluster, settings)
        monitors = set(KINDS["monitor"].list_ids(cluster, settings.owner, settings.id_prefix))
        assert monitor_id in monitors and len(monitors) == 11
        without = _team_settings(alerting_url, settings.id_prefix, None)
        plan = make_plan(cluster, without, desired_objects(cluster, without))
        assert [(c.action, c.kind, c.id) for c in plan.pending] == [("delete", "monitor", monitor_id)]
        install(cluster, without)
        left = set(KINDS["monitor"].list_ids(cluster, settings.owner, settings.id_prefix))
        assert left == monitors - {monitor_id}
    finally:
        uninstall(cluster, settings, purge=True)
    assert KINDS["monitor"].list_ids(cluster, settings.owner, settings.id_prefix) == []


def test_cli_validate_formats(tmp_path: Path) -> None:
    folder = team_folder(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(app, ["rules", "validate", str(folder), "--format", "json"])
    assert ok.exit_code == 0, ok.output
    assert [r["signal"] for r in json.loads(ok.stdout)["rules"] if r["origin"] == "custom"] == [SIGNAL]


def _failures(settings: Settings, users: list[str], now: dt.datetime) -> None:
    seq = iter(range(10**9))
    events = [e for user in users for e in expand(EventSpec(at="-5m", action="user-login", outcome="failure",
                                                            user=user, count=9, every="20s"), "ex", now, seq)]
    cluster = Cluster.connect(settings.cluster)
    _bulk(cluster, settings.index("events_data_stream"), events)
    cluster.request("POST", f"/{settings.index('events_data_stream')}/_refresh")


@pytest.mark.parametrize("engine", [CORE, ALERTING])
def test_exception_for_one_user_then_expiry(request: pytest.FixtureRequest, unique: str, engine: str) -> None:
    url = request.getfixturevalue("alerting_url" if engine == ALERTING else "cluster_url")
    settings = make_settings(url, f"pgex{unique}", "ex", engine={"mode": "pacsguard"})
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    try:
        now = dt.datetime.now(dt.timezone.utc)
        _failures(settings, ["alice", "bob"], now)
        monitor = next(c.monitor for c in compile_rules(settings) if c.signal == "1a")
        assert run_monitor(cluster, monitor, now, engine=engine).fired() == {"ex-alice", "ex-bob"}
        entry = add(cluster, settings, rules=["1a"], field="user.name", value="ex-alice", reason="pen test",
                    author="soc-lead", until="20s", now=now)
        assert [e.id for e in entries(cluster, settings)] == [entry.id]
        # the exception holds: alice raises nothing, bob still does
        assert run_monitor(cluster, monitor, now + dt.timedelta(seconds=5), engine=engine).fired() == {"ex-bob"}
        # past its expiry nothing was touched, and alice's alert comes back
        after = now + dt.timedelta(seconds=21)
        if engine == ALERTING:  # the dry run's period_end is the node's clock: wait for it
            time.sleep(max(0.0, (after - dt.datetime.now(dt.timezone.utc)).total_seconds()))
        assert run_monitor(cluster, monitor, after, engine=engine).fired() == {"ex-alice", "ex-bob"}
        assert entries(cluster, settings, now=after) == []
    finally:
        uninstall(cluster, settings, purge=True)


def test_snooze_records_and_delivers_after_its_end(cluster_url: str, unique: str) -> None:
    hook = Hook()
    settings = make_settings(cluster_url, f"pgsn{unique}", "sn", engine={"mode": "pacsguard", "redeliver_after": "1s"},
                             notifications={"channels": [{"name": "soc", "type": "webhook", "url": hook.url}]})
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    watcher = Watcher(cluster, settings, run_jobs=False)
    try:
        now = dt.datetime.now(dt.timezone.utc)
        _failures(settings, ["alice"], now)
        add(cluster, settings, kind="snooze", rules=["1a"], field=None, value=None, reason="planned migration",
            author="soc-lead", until="30s", now=now)
        watcher.tick(now)
        watcher._collect_deliveries(wait=True)
        alerts = AlertStore(cluster, settings.index("alerts")).search(signal="1a", size=10)
        assert [a.entity for a in alerts] == ["ex-alice"]  # recorded
        assert [d["status"] for d in alerts[0].source["deliveries"]] == ["snoozed"]
        watcher.tick(now + dt.timedelta(seconds=10))
        watcher._collect_deliveries(wait=True)
        assert hook.requests == []  # delivered nothing while snoozed
        watcher.tick(now + dt.timedelta(seconds=31))
        watcher._collect_deliveries(wait=True)
        assert [json.loads(b)["alert"]["entity"]["value"] for _, b in hook.requests] == ["ex-alice"]  # once, at its end
    finally:
        watcher.close()
        hook.server.shutdown()
        uninstall(cluster, settings, purge=True)


SIGMA_SCENARIO = """\
signal: sigma-svc-delete
cases:
  - name: a service account deleting a study fires
    events:
      - {at: -1m, action: study-delete, user: svc-backup, roles: [service-account], extra: {host: pacs-01}}
    fires: [svc-backup]
  - name: on the test PACS it does not
    events:
      - {at: -1m, action: study-delete, user: svc-test, roles: [service-account], extra: {host: test-pacs}}
    fires: []
"""


def test_an_imported_sigma_rule_scenario_fires(cluster_url: str, tmp_path: Path) -> None:
    from pacsguard.rules.lock import write_lock
    from pacsguard.rules.model import load_rules
    from pacsguard.rules.sigma import import_rule

    folder = tmp_path / "sigma-rules"
    (folder / "scenarios").mkdir(parents=True)
    (folder / "impact_sigma_svc_delete.yml").write_text(import_rule(SIGMA_IN, "sigma-svc-delete"))
    (folder / "scenarios" / "sigma-svc-delete.yaml").write_text(SIGMA_SCENARIO)
    write_lock(load_rules(folder, custom=True), folder)
    settings = _team_settings(cluster_url, "pgsig", folder)
    assert validate(settings).ok
    report = run_scenarios(Cluster.connect(settings.cluster), settings, only={"sigma-svc-delete"})
    assert [(r.case, sorted(r.fired), r.passed) for r in report.results] == [
        ("a service account deleting a study fires", ["svc-backup"], True), ("on the test PACS it does not", [], True)]
