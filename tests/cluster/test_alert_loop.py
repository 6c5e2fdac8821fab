"""The alert loop on a cluster without Alerting: events in through `pacsguard collect`, the
pacsguard engine (`watch`) runs every rule, and each alert reaches a real webhook receiver and
a real SMTP server exactly once per (rule, entity); ack stops reminders, a restart repeats
nothing, a cleared condition completes the alert."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from alert_receivers import Mailbox, Receiver, loop_settings
from pacsguard.core.connection import Cluster
from pacsguard.core.content import content_path
from pacsguard.core.settings import Settings, duration_seconds
from pacsguard.engines.alerts import ACKNOWLEDGED, COMPLETED
from pacsguard.jobs import run_job
from pacsguard.services.alerts import acknowledge, close, list_alerts, queue, show_alert
from pacsguard.services.install import install, uninstall
from pacsguard.services.scenarios import _case_key, expand, load_scenarios
from pacsguard.services.watch import Watcher

pytestmark = pytest.mark.cluster


def scenario_events(now: dt.datetime) -> tuple[list[dict[str, Any]], set[tuple[str, str]], set[tuple[str, str]]]:
    """Every scenario case's events, the (signal, entity) pairs that must alert, and every
    (signal, entity) a rule's own cases use (the others belong to other rules' cases)."""
    seq = iter(range(10**9))
    events: list[dict[str, Any]] = []
    expected: set[tuple[str, str]] = set()
    own: set[tuple[str, str]] = set()
    for path, scen in load_scenarios(content_path("detections", "scenarios")):
        for i, case in enumerate(scen.cases):
            key = _case_key(path, i)
            for spec in case.events:
                events += expand(spec, key, now, seq)
                own.add((scen.signal, spec.source_ip or "") if spec.source_ip else (scen.signal, ""))
                own.add((scen.signal, f"{key}-{spec.user}"))
            for entity in case.fires:
                ips = {e.source_ip for e in case.events if e.source_ip}
                expected.add((scen.signal, entity if entity in ips else f"{key}-{entity}"))
    return events, expected, own


def collect(settings: Settings, events: list[dict[str, Any]], tmp: Path) -> None:
    """Ship the events with `pacsguard collect --file` (a real collector process) and wait until indexed."""
    source = tmp / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    cluster = Cluster.connect(settings.cluster)
    stream = settings.index("events_data_stream")
    user_settings = tmp / "settings.yaml"
    user_settings.write_text(json.dumps({"id_prefix": settings.id_prefix, "namespace": settings.namespace}))
    proc = subprocess.Popen([sys.executable, "-m", "pacsguard.cli", "--url", settings.cluster.url,
                             "--settings", str(user_settings), "collect", "--file", str(source),
                             "--state-dir", str(tmp / "state"), "--flush-interval", "0.2"],
                            env={**os.environ, "PACSGUARD_SALT": "loop-salt-0123456789abcdef"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            cluster.request("POST", f"/{stream}/_refresh", ok_missing=True)
            got = (cluster.request("GET", f"/{stream}/_count", ok_missing=True) or {}).get("count", 0)
            if got >= len(events):
                break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert got == len(events), f"collector indexed {got} of {len(events)}: {err[-2000:]}"
    assert cluster.request("GET", f"/{settings.index('failures')}/_count")["count"] == 0


def test_alerts_reach_webhook_and_smtp_once_per_rule_and_entity(
        pack_settings: Settings, receivers: tuple[Receiver, Mailbox, int], tmp_path: Path) -> None:
    hook, box, smtp_port = receivers
    settings = loop_settings(pack_settings, hook, smtp_port)
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    events, expected, cases = scenario_events(now)
    collect(settings, events, tmp_path)
    for job in ("baselines", "profiles"):
        run_job(cluster, settings, job, now=now)
    cluster.request("POST", f"/{settings.index('baselines')},{settings.index('profiles')}/_refresh")

    watcher = Watcher(cluster, settings, run_jobs=False)
    assert {s.compiled.signal for s in watcher.rules} == {"1a", "1b", "1c", "2a", "2b", "3", "4a", "4b", "5a", "5b"}
    watcher.tick()
    watcher.close()

    def first_key(body: dict[str, Any]) -> tuple[str, str]:
        return body["alert"]["rule"]["signal"], body["alert"]["entity"]["keys"][0]

    hooks = Counter(first_key(r["body"]) for r in hook.requests)
    assert hook.bad_signatures == 0
    # judged on each rule's own scenario cases, as test-rules does: all events share one data
    # stream here, so a 1b burst also trips 1a for its users (a true alert, not a miss)
    own = {pair for pair in hooks if pair in cases}
    assert own == expected, f"missing {expected - own}, unexpected {own - expected}"
    # signal 3 alerts once per (actor, action, target): one per scenario event here
    assert all(n == 1 for n in hooks.values()), hooks
    assert len(box.messages) == len(hook.requests)
    mail = next(m for m in box.messages if "Bulk export" in m["Subject"])
    body = mail.get_payload(decode=True).decode()
    for needed in ("Rule: Bulk export", "Entity (user.name): s4a", "count ", "Window: 30m",
                   "Owner: PACS on-call", "Evidence: data stream", "First response (contain): Disable"):
        assert needed in body, body
    escalated = [r["body"] for r in hook.requests if r["body"]["alert"]["escalated"]]
    assert escalated and all(b["alert"]["severity"] == "critical" for b in escalated)
    admin = next(r["body"] for r in hook.requests if r["body"]["alert"]["rule"]["signal"] == "3")
    assert admin["alert"]["owner"] == "IAM team" and "Owner: IAM team" in admin["text"]

    # a restarted engine finds the open alerts again: nothing is delivered twice
    sent = len(hook.requests)
    again = Watcher(cluster, settings, run_jobs=False)
    again.tick()
    again.close()
    assert len(hook.requests) == sent and len(box.messages) == sent
    alerts = list_alerts(cluster, settings)  # some may have completed as time moved on
    assert len(alerts) == len(hook.requests)
    shown = alerts[0]
    assert all(d["ok"] for d in cluster.request("GET", f"/{settings.index('alerts')}/_doc/{shown.id}")
               ["_source"]["deliveries"])

    # the conditions clear (the windows move past the events): every alert completes
    later = Watcher(cluster, settings, run_jobs=False)
    for state in later.rules:
        later.run_rule(state, now + dt.timedelta(days=2))
    later.close()
    assert list_alerts(cluster, settings, states=["ACTIVE", "ACKNOWLEDGED"]) == []
    assert len(list_alerts(cluster, settings, states=[COMPLETED])) == sent
    assert len(hook.requests) == sent
    uninstall(cluster, settings, purge=True)


def test_ack_stops_reminders(pack_settings: Settings, receivers: tuple[Receiver, Mailbox, int],
                             tmp_path: Path) -> None:
    hook, _, smtp_port = receivers
    settings = loop_settings(pack_settings, hook, smtp_port, renotify_every="1s")
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    events = [{"timestamp": (now - dt.timedelta(seconds=10 * i)).isoformat(), "app": "loop-test",
               "action": "user-login", "outcome": "failure", "user": user, "source_ip": "10.1.2.3",
               "id": f"{user}-{i}"} for user in ("ann", "bob") for i in range(8)]
    collect(settings, events, tmp_path)
    watcher = Watcher(cluster, settings, run_jobs=False)
    start = dt.datetime.now(dt.timezone.utc)
    watcher.tick(start)
    watcher.close()
    opened = {r["body"]["alert"]["entity"]["value"]: r["body"]["alert"]["id"] for r in hook.requests}
    assert set(opened) == {"ann", "bob"} and len(hook.requests) == 2
    acknowledge(cluster, settings, opened["ann"], by="analyst-1", note="calling ann")
    later = Watcher(cluster, settings, run_jobs=False)
    later.tick(start + dt.timedelta(seconds=2))  # both still firing; the reminder is due for both
    later.close()
    reminders = Counter(r["body"]["alert"]["entity"]["value"] for r in hook.requests[2:])
    assert reminders == Counter({"bob": 1}), reminders
    ann = cluster.request("GET", f"/{settings.index('alerts')}/_doc/{opened['ann']}")["_source"]
    assert ann["state"] == ACKNOWLEDGED
    assert [h["by"] for h in ann["history"]] == ["pacsguard", "analyst-1"]
    uninstall(cluster, settings, purge=True)


def test_an_acknowledgement_survives_the_engine_updating_the_alert(
        pack_settings: Settings, receivers: tuple[Receiver, Mailbox, int], tmp_path: Path) -> None:
    """ack and watch write the same document; neither overwrites the other (optimistic concurrency)."""
    hook, _, smtp_port = receivers
    settings = loop_settings(pack_settings, hook, smtp_port)
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    events = [{"timestamp": (now - dt.timedelta(seconds=10 * i)).isoformat(), "app": "loop-test",
               "action": "user-login", "outcome": "failure", "user": "cid", "source_ip": "10.1.2.4",
               "id": f"cid-{i}"} for i in range(9)]
    collect(settings, events, tmp_path)
    watcher = Watcher(cluster, settings, run_jobs=False)
    watcher.tick(now)
    alert_id = next(a.id for a in list_alerts(cluster, settings) if a.signal == "1a")
    store = watcher.store
    calls = 0

    def engine_writes(src: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the analyst acknowledges between the engine's read and its write
            acknowledge(cluster, settings, alert_id, by="analyst-2", note="on it")
        src["count"] = 99.0

    store.update(alert_id, engine_writes)
    # the engine's first write was refused (the document changed since it read it) and redone
    assert calls == 2
    after = store.get(alert_id).source
    assert after["state"] == ACKNOWLEDGED and after["count"] == 99.0
    assert [h["by"] for h in after["history"]] == ["pacsguard", "analyst-2"]
    watcher.tick(now + dt.timedelta(seconds=5))
    watcher.close()
    assert store.get(alert_id).source["state"] == ACKNOWLEDGED
    uninstall(cluster, settings, purge=True)


def test_alerts_stay_in_the_queue_until_a_person_closes_them(
        pack_settings: Settings, receivers: tuple[Receiver, Mailbox, int], tmp_path: Path) -> None:
    """The condition is the engine's, the queue the analysts': an alert nobody acknowledged stays in
    `alerts list` (and the console) after its condition cleared; closing an alert whose condition
    holds takes it out of the queue without a new alert for the same episode, and it completes
    when the condition clears."""
    hook, _, smtp_port = receivers
    settings = loop_settings(pack_settings, hook, smtp_port)
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    events = [{"timestamp": now.isoformat(), "app": "loop-test", "action": "role-grant", "user": actor,
               "target_user": f"{actor}-target", "roles_changed": ["pacs-admin"], "id": f"grant-{actor}"}
              for actor in ("quinn", "rosa")]
    collect(settings, events, tmp_path)
    start = dt.datetime.now(dt.timezone.utc)

    def run_rules(at: dt.datetime) -> None:  # a watch run at that time (each Watcher runs every rule once)
        watcher = Watcher(cluster, settings, run_jobs=False)
        watcher.tick(at)
        watcher.close()

    run_rules(start)
    opened = {v.keys[0]: v for v in queue(cluster, settings)}
    assert set(opened) == {"quinn", "rosa"}
    assert all((v.status, v.condition) == ("open", "active") for v in opened.values())
    close(cluster, settings, opened["rosa"].id, by="analyst-3", note="planned, ticket 17")
    run_rules(start + dt.timedelta(seconds=30))  # both grants still in the window
    assert {v.keys[0] for v in queue(cluster, settings)} == {"quinn"}
    rosa = show_alert(cluster, settings, opened["rosa"].id)
    assert (rosa.status, rosa.condition) == ("closed", "active")
    assert len(list_alerts(cluster, settings, signal="3")) == 2  # no second alert for rosa's episode

    cleared_at = start + dt.timedelta(seconds=duration_seconds(settings.detection.event_rule_window) + 60)
    run_rules(cleared_at)
    quinn = next(v for v in queue(cluster, settings) if v.keys[0] == "quinn")
    assert (quinn.state, quinn.status, quinn.condition) == (COMPLETED, "open", "cleared")
    assert show_alert(cluster, settings, opened["rosa"].id).state == COMPLETED
    close(cluster, settings, quinn.id, by="analyst-3", note="confirmed with the owner")
    assert queue(cluster, settings) == []
    assert {v.status for v in list_alerts(cluster, settings)} == {"closed"}
    assert len(hook.requests) == 2  # one message per alert, none for closing or clearing
    uninstall(cluster, settings, purge=True)
