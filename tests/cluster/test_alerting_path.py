"""The pack on a node that runs the real OpenSearch Alerting and Notifications plugins (2.19.6).

The most common production path: `engine.mode: auto` hands every rule to Alerting. These tests
run on a second local node built with the plugin zips of ../shared/opensearch-plugins/2.19.6
(the `alerting_url` fixture); without them (a user's clone) they skip, saying why.

What they hold: every rule scenario on Alerting with the same entities as on the pack's engine;
live alerts delivered through Notifications to a real webhook receiver with the entity named in
the rule's order; alerts / respond / checklist / status on Alerting alerts; an owner change and
re-install that keeps trigger ids, acknowledgements and history and pages nobody again; the
alert queue (an alert whose condition cleared stays until a person closes it); uninstall
exactness.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alert_receivers import Hook
from pacsguard.cli import app
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.engines import ALERTING, CORE
from pacsguard.engines.alerting import monitor_runs
from pacsguard.engines.alerts import ACKNOWLEDGED, ACTIVE, COMPLETED, DELETED
from pacsguard.packobjects import KINDS
from pacsguard.services.alerts import acknowledge, close, list_alerts, queue, show_alert
from pacsguard.services.checklist import checklist
from pacsguard.services.install import install, uninstall
from pacsguard.services.response.act import plan_reset
from pacsguard.services.response.context import load_alert
from pacsguard.services.rulestatus import rule_runs
from pacsguard.services.scenarios import run_scenarios
from testnode import make_settings
from typer.testing import CliRunner

pytestmark = pytest.mark.cluster
SCENARIO_CASES = 35


def wait_for(what: str, check: Callable[[], Any], timeout: float = 150.0, every: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def bulk_generic(cluster: Cluster, settings: Settings, events: list[dict[str, Any]]) -> None:
    lines = []
    for event in events:
        lines += [json.dumps({"create": {"_index": settings.index("events_data_stream")}}),
                  json.dumps({"message": json.dumps(event)})]
    res = cluster.request("POST", "/_bulk", body="\n".join(lines) + "\n", params={"refresh": "true"})
    assert not res["errors"], res


def monitors_ran_since(cluster: Cluster, settings: Settings, signals: list[str], since_ms: int) -> bool:
    live = KINDS["monitor"].candidates(cluster, settings.id_prefix)
    runs = monitor_runs(cluster)
    return all(runs.get(str(live[f"{settings.scope}-rule-{s}"]["_monitor_id"]), {}).get("last_run", 0) > since_ms
               for s in signals)


def trigger_ids(cluster: Cluster, settings: Settings) -> dict[str, list[str]]:
    return {obj_id: [next(iter(t.values()))["id"] for t in live["triggers"]]
            for obj_id, live in KINDS["monitor"].candidates(cluster, settings.id_prefix).items()}


# ------------------------------------------------------------------ scenarios and parity


def test_every_scenario_passes_on_alerting_with_the_entities_of_the_pack_engine(alerting_url: str,
                                                                                unique: str) -> None:
    settings = make_settings(alerting_url, f"pgas{unique}", f"as{unique}")
    cluster = Cluster.connect(settings.cluster)
    on_alerting = run_scenarios(cluster, settings, engine=ALERTING)
    failed = [f"{r.signal} {r.case}: expected {sorted(r.expected)}, fired {sorted(r.fired)}"
              for r in on_alerting.results if not r.passed]
    assert not failed, failed
    assert len(on_alerting.results) == SCENARIO_CASES
    assert {r.engine for r in on_alerting.results} == {ALERTING}
    # parity: the same events give the same entities on the pack's engine
    on_core = run_scenarios(cluster, settings, engine=CORE)
    assert {(r.signal, r.case): (r.fired, r.escalated) for r in on_core.results} == \
        {(r.signal, r.case): (r.fired, r.escalated) for r in on_alerting.results}


def test_test_rules_command_on_alerting_reports_every_scenario(alerting_url: str, unique: str,
                                                               tmp_path: Path) -> None:
    user_settings = tmp_path / "settings.yaml"
    user_settings.write_text(json.dumps({"id_prefix": f"pgtr{unique}", "namespace": f"tr{unique}",
                                         "pseudonymization": {"salt": "test-salt-0123456789abcdef"}}))
    result = CliRunner().invoke(app, ["--url", alerting_url, "--settings", str(user_settings), "--json",
                                      "test-rules"], env={}, catch_exceptions=False)
    data = json.loads(result.stdout)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert data["ok"] and data["engine"] == [ALERTING]
    assert len(data["results"]) == SCENARIO_CASES and all(r["passed"] for r in data["results"])


# ------------------------------------------------------------------ the live loop


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.server.shutdown()


def loop_settings(url: str, prefix: str, namespace: str, hook: Hook, owner: str) -> Settings:
    return make_settings(url, prefix, namespace, engine={"mode": "auto"}, detection={"event_rule_window": "3m"},
                         routing={"default_owner": owner},
                         connectors={"keycloak": {"url": "https://keycloak.hospital.test", "realm": "pacs"}},
                         notifications={"channels": [{"name": "soc", "type": "webhook", "url": hook.url,
                                                      "headers": {"X-Tenant": "radiology"}}]})


def test_the_alerting_loop_keeps_alerts_through_an_owner_change_and_pages_nobody_again(
        alerting_url: str, unique: str, hook: Hook, tmp_path: Path) -> None:
    prefix, namespace = f"pgal{unique}", f"al{unique}"
    settings = loop_settings(alerting_url, prefix, namespace, hook, "Radiology on-call")
    cluster = Cluster.connect(settings.cluster)
    # what the user made by hand and the uninstall must leave alone
    mine = KINDS["monitor"].candidates(cluster, prefix)
    try:
        result = install(cluster, settings)
        assert not [w for w in result.plan.warnings if "no channel" in w]
        assert {c.id for c in result.applied if c.kind == "monitor"} == {
            f"{settings.scope}-rule-{s}" for s in ("1a", "1b", "1c", "2a", "2b", "3", "4a", "4b", "5a", "5b")}
        config = KINDS["notification_channel"].get(cluster, f"{settings.scope}-soc")
        assert config["config"]["webhook"]["header_params"] == {
            "Content-Type": "text/plain; charset=utf-8", "X-Tenant": "radiology"}

        now = dt.datetime.now(dt.timezone.utc)
        victim, actor, target = f"victim-{unique}", f"rig.actor-{unique}", f"rig.target-{unique}"
        burst = [{"timestamp": (now - dt.timedelta(seconds=40 - i)).isoformat(), "app": "portal",
                  "action": "user-login", "outcome": "failure", "user": victim, "source_ip": "10.9.9.9"}
                 for i in range(settings.thresholds.login_failures_per_user + 1)]
        grant = {"timestamp": now.isoformat(), "app": "portal", "action": "role-grant", "outcome": "success",
                 "user": actor, "target_user": target, "roles_changed": ["pacs-admin"]}
        bulk_generic(cluster, settings, [*burst, grant])

        def both() -> dict[str, Any] | None:
            found = {v.signal: v for v in list_alerts(cluster, settings, states=[ACTIVE])}
            return found if {"1a", "3"} <= found.keys() and hook.bodies(victim) and hook.bodies(actor) else None

        alerts = wait_for("an Alerting alert for 1a and for 3, each delivered", both)
        a1, a3 = alerts["1a"], alerts["3"]
        # the entity is named in the rule's order, in the alert and in the message
        assert a3.keys == [actor, "role-grant", target] and a3.entity == f"{actor}|role-grant|{target}"
        message = hook.bodies(actor)[0]
        assert f"Entity (user.name|event.action|user.target.name): {actor}|role-grant|{target}" in message
        headers = next(h for h, body in hook.requests if actor in body)
        assert headers["x-tenant"] == "radiology" and headers["content-type"].startswith("text/plain")
        # what an analyst reads: owner, time, severity and count as on the pack's engine
        assert (a1.engine, a1.entity, a1.owner, a1.severity, a1.count) == (
            "alerting", victim, "Radiology on-call", "high", settings.thresholds.login_failures_per_user + 1)
        assert dt.datetime.fromisoformat(a1.start_time) <= dt.datetime.now(dt.timezone.utc)
        assert a1.status == "open" and a1.condition == "active"

        # respond on the Alerting alert: the actor's credentials, the grant taken back in Keycloak
        ctx = load_alert(cluster, settings, a3.id)
        planned, by_hand = plan_reset(cluster, settings, ctx)
        assert [(p.connector, p.action, p.target) for p in planned] == [
            ("keycloak", "remove-realm-role", f"{target}:pacs-admin")]
        assert any(f"reset {actor}'s credentials" in line for line in by_hand)

        # status and checklist see the monitors run on Alerting
        runs = {r.signal: r for r in rule_runs(cluster, settings)}
        assert all(r.engine == "alerting" and r.installed and r.running and r.last_run for r in runs.values()), runs
        answers = {a.key: a for a in checklist(cluster, settings)}
        for key in ("alerts-logins", "alerts-admin-changes", "alerts-export-sharing"):
            assert answers[key].status == "PASS", answers[key]
        user_settings = tmp_path / "settings.yaml"
        user_settings.write_text(json.dumps({"id_prefix": prefix, "namespace": namespace,
                                             "pseudonymization": {"salt": "test-salt-0123456789abcdef"},
                                             "engine": {"mode": "auto"}, "routing": {"default_owner": "x"},
                                             "notifications": {"channels": [{"name": "soc", "type": "webhook",
                                                                             "url": hook.url, "headers": {
                                                                                 "X-Tenant": "radiology"}}]}}))
        status = CliRunner().invoke(app, ["--url", alerting_url, "--settings", str(user_settings), "status"],
                                    env={}, catch_exceptions=False)
        assert "never" not in status.stdout and "NOT RUNNING" not in status.stdout, status.stdout

        # a person acknowledges 1a, with who and why kept
        acknowledge(cluster, settings, a1.id, by="dr.ack", note="calling the user")
        seen = show_alert(cluster, settings, a1.id)
        assert (seen.state, seen.status) == (ACKNOWLEDGED, "acknowledged")
        assert (seen.detail or {})["workflow"]["history"][-1]["by"] == "dr.ack"
        assert (seen.detail or {})["workflow"]["history"][-1]["note"] == "calling the user"
        delivered = len(hook.requests)

        # the owner changes; the re-install updates every monitor and keeps its triggers and actions
        before = trigger_ids(cluster, settings)
        changed = loop_settings(alerting_url, prefix, namespace, hook, "IAM team")
        reinstalled_ms = int(time.time() * 1000)
        result = install(cluster, changed)
        assert {c.id for c in result.applied if c.kind == "monitor"} == set(before)
        assert trigger_ids(cluster, changed) == before
        wait_for("a run of monitors 1a and 3 after the re-install",
                 lambda: monitors_ran_since(cluster, changed, ["1a", "3"], reinstalled_ms), timeout=130)
        time.sleep(3)  # the run's actions, if any, have been sent by now
        assert len(hook.requests) == delivered, [body[:200] for _, body in hook.requests[delivered:]]
        after = {v.id: v for v in list_alerts(cluster, changed)}
        assert after[a1.id].state == ACKNOWLEDGED and after[a1.id].status == "acknowledged"
        assert after[a3.id].state == ACTIVE
        assert not list_alerts(cluster, changed, states=[DELETED])
        assert after[a1.id].owner == "IAM team"

        # signal 3's condition clears (window 3m): the alert stays in the queue until a person closes it
        wait_for("signal 3's alert completing in Alerting",
                 lambda: show_alert(cluster, changed, a3.id).state == COMPLETED, timeout=260, every=5)
        cleared = next(v for v in queue(cluster, changed) if v.id == a3.id)
        assert (cleared.status, cleared.condition) == ("open", "cleared")
        close(cluster, changed, a3.id, by="dr.close", note="planned change, ticket 4711")
        assert a3.id not in {v.id for v in queue(cluster, changed)}
        assert show_alert(cluster, changed, a3.id).status == "closed"
        close(cluster, changed, a1.id, by="dr.close", note="user verified")
        assert {v.id for v in queue(cluster, changed)} & {a1.id, a3.id} == set()
    finally:
        uninstall(cluster, settings, purge=True)
    # exactly the pack's objects went: nothing of this installation is left, alerts of removed
    # monitors (DELETED in Alerting) are no alerts to anyone
    assert not KINDS["monitor"].list_ids(cluster, settings.owner, prefix)
    assert KINDS["monitor"].candidates(cluster, prefix).keys() == mine.keys()
    assert list_alerts(cluster, settings) == []


def test_uninstall_leaves_hand_made_monitors_and_channels(alerting_url: str, unique: str, hook: Hook) -> None:
    settings = loop_settings(alerting_url, f"pgun{unique}", f"un{unique}", hook, "Radiology on-call")
    cluster = Cluster.connect(settings.cluster)
    try:
        install(cluster, settings)
        # a team's own monitor and channel, named like the pack's but without its stamp
        cluster.request("POST", "/_plugins/_notifications/configs", body={
            "config_id": f"{settings.scope}-teams-own", "config": {
                "name": "team's own", "config_type": "webhook", "is_enabled": True,
                "webhook": {"url": hook.url}}})
        own = json.loads(json.dumps(KINDS["monitor"].get(cluster, f"{settings.scope}-rule-1a")))
        own["name"] = f"{settings.scope}-rule-custom team's own monitor"
        for trig in own["triggers"]:
            body = next(iter(trig.values()))
            body.pop("id", None)
            for action in body["actions"]:
                action.pop("id", None)
        cluster.request("POST", "/_plugins/_alerting/monitors", body=own, params={"refresh": "true"})
    finally:
        uninstall(cluster, settings, purge=True)
    left = KINDS["monitor"].candidates(cluster, settings.id_prefix)
    try:
        assert set(left) == {f"{settings.scope}-rule-custom"}
        assert KINDS["notification_channel"].get(cluster, f"{settings.scope}-teams-own") is not None
        assert KINDS["notification_channel"].get(cluster, f"{settings.scope}-soc") is None
    finally:
        for live in left.values():
            cluster.request("DELETE", f"/_plugins/_alerting/monitors/{live['_monitor_id']}")
        cluster.request("DELETE", f"/_plugins/_notifications/configs/{settings.scope}-teams-own", ok_missing=True)
