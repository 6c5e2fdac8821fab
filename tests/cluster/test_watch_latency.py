"""`watch` alerts soon after the events arrive: a windowed rule runs when events it reads have
arrived, not at its schedule, and the rules that read profiles (2a new country, 2b new device,
5b new recipients) compare the events that have just arrived with the stored history when they
run, without waiting for the next run of the profiles job."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.jobs import run_job
from pacsguard.services.watch import Watcher

pytestmark = pytest.mark.cluster


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def login(at: dt.datetime, user: str, country: str, device: str, ingested: dt.datetime) -> dict[str, Any]:
    return {"@timestamp": iso(at), "event": {"dataset": "pacs.audit", "action": "user-login", "outcome": "success",
                                             "ingested": iso(ingested)},
            "user": {"name": user}, "device": {"id": device},
            "source": {"ip": "81.2.69.142", "geo": {"country_iso_code": country, "region_iso_code": f"{country}-X"}}}


def bulk(cluster: Cluster, settings: Settings, docs: list[dict[str, Any]]) -> None:
    res = cluster.request("POST", f"/{settings.index('events_data_stream')}/_bulk",
                          params={"pipeline": "_none", "refresh": "true"},
                          body="".join('{"create":{}}\n' + json.dumps(d) + "\n" for d in docs))
    assert not res["errors"]


def test_a_login_from_a_new_country_and_device_alerts_at_the_next_rule_run(cluster: Cluster, pack: Settings) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    history = [login(now - dt.timedelta(days=d), user, "GB", f"{user}-old", now - dt.timedelta(days=d))
               for d in range(2, 6) for user in ("traveller", "newphone", "homebody")]
    bulk(cluster, pack, history)
    for job in ("baselines", "profiles"):
        run_job(cluster, pack, job)
    # just arrived, after the last job run
    bulk(cluster, pack, [login(now - dt.timedelta(seconds=20), "traveller", "SE", "traveller-old", now),
                         login(now - dt.timedelta(seconds=20), "newphone", "GB", "newphone-new", now),
                         login(now - dt.timedelta(seconds=20), "homebody", "GB", "homebody-old", now)])
    watcher = Watcher(cluster, pack, run_jobs=False)
    for state in watcher.rules:
        if state.compiled.signal in ("2a", "2b"):
            watcher.run_rule(state, now)
            assert state.last_error is None
    watcher.close()
    assert alerted(cluster, pack) == [("2a", "traveller"), ("2b", "newphone")]


def failure(at: dt.datetime, user: str, ingested: dt.datetime) -> dict[str, Any]:
    return {"@timestamp": iso(at), "event": {"dataset": "pacs.audit", "action": "user-login", "outcome": "failure",
                                             "ingested": iso(ingested)}, "user": {"name": user}}


def alerted(cluster: Cluster, settings: Settings) -> list[tuple[str, str]]:
    cluster.request("POST", f"/{settings.index('alerts')}/_refresh")
    hits = cluster.request("POST", f"/{settings.index('alerts')}/_search", body={"size": 10})["hits"]["hits"]
    return sorted((h["_source"]["rule"]["signal"], h["_source"]["entity"]["value"]) for h in hits)


def test_a_windowed_rule_runs_when_its_events_arrive_not_at_its_schedule(cluster: Cluster, pack: Settings) -> None:
    mono = [1000.0]
    watcher = Watcher(cluster, pack, run_jobs=False, clock=lambda: mono[0])
    watcher.tick()  # every rule runs once: nothing to fire
    now = dt.datetime.now(dt.timezone.utc)
    bulk(cluster, pack, [failure(now - dt.timedelta(seconds=10 - i), "guesser", now) for i in range(8)])
    mono[0] += 6  # past arrival checks (every 2 s), far from 1a's next scheduled run (1 minute)
    watcher.lease.tick()
    watcher.tick()
    watcher.close()
    assert ("1a", "guesser") in alerted(cluster, pack)
