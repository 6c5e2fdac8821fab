"""The baselines and profiles jobs against the real node (their pure parts: tests/unit/test_jobs_units.py).

Events go in as a shipper sends them: generic JSON text in `message`, through
the installed router, enrich (geoip, device id) and all. Timestamps are
relative to now, so the jobs run with their real clock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pacsguard.core.connection import Cluster
from pacsguard.core.errors import MissingPlugin
from pacsguard.core.settings import Settings
from pacsguard.jobs import profiles, run_baselines, run_profiles
from pacsguard.jobs.profiles import profile_id
from pacsguard.services.install import install, uninstall
from testnode import make_settings

# Public addresses the GeoLite2 test databases (2019-11-19) resolve.
GB, US, SE, CN = "81.2.69.142", "216.160.83.56", "89.160.20.112", "175.16.199.1"
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture(autouse=True)
def _fresh_now() -> None:
    """Event times are relative to the start of each test, not to the collection of this module:
    in a long run the jobs (which run as of the real now) would see them aged by the wait."""
    global NOW
    NOW = dt.datetime.now(dt.timezone.utc)


def ago(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


def event(when: dt.datetime, action: str, user: str, **fields: Any) -> dict[str, Any]:
    return {"timestamp": when.isoformat(), "app": "cloudpacs", "action": action, "outcome": "success",
            "user": user, **fields}


def export(when: dt.datetime, user: str, studies: int) -> dict[str, Any]:
    uids = [f"1.2.826.0.1.3680043.8.498.{int(when.timestamp())}{i}" for i in range(studies)]
    return event(when, "study-export", user, studies=uids)


def login(when: dt.datetime, user: str, ip: str, user_agent: str = UA) -> dict[str, Any]:
    return event(when, "user-login", user, source_ip=ip, user_agent=user_agent)


def share(when: dt.datetime, user: str, recipients: list[str]) -> dict[str, Any]:
    return event(when, "share-create", user, share={"id": f"lnk-{when.timestamp()}", "recipients": recipients})


def send(cluster: Cluster, settings: Settings, events: list[dict[str, Any]], chunk: int = 2000) -> None:
    """Bulk-create raw events in the data stream; every one must pass the pipeline."""
    stream = settings.index("events_data_stream")
    for i in range(0, len(events), chunk):
        body = "".join('{"create":{}}\n' + json.dumps({"message": json.dumps(e)}) + "\n"
                       for e in events[i:i + chunk])
        res = cluster.request("POST", f"/{stream}/_bulk", body=body)
        assert not res["errors"], [it for it in res["items"] if "error" in it["create"]][:1]
    cluster.request("POST", f"/{stream},{settings.index('failures')}/_refresh")
    failed = cluster.request("GET", f"/{settings.index('failures')}/_count")["count"]
    assert failed == 0, cluster.request("GET", f"/{settings.index('failures')}/_search")["hits"]["hits"][0]


def docs(cluster: Cluster, index: str, **term: str) -> dict[str, dict[str, Any]]:
    query = {"bool": {"filter": [{"term": {k.replace("__", "."): v}} for k, v in term.items()]}}
    res = cluster.request("POST", f"/{index}/_search", body={"size": 10000, "query": query})
    return {h["_id"]: h["_source"] for h in res["hits"]["hits"]}


def installed(cluster: Cluster, settings: Settings) -> Iterator[Settings]:
    try:
        install(cluster, settings)
    except MissingPlugin:
        pass  # a node without Alerting gets everything but the monitors, which the jobs do not need
    try:
        yield settings
    finally:
        uninstall(cluster, settings, purge=True)


@pytest.fixture
def pack(cluster: Cluster, pack_settings: Settings) -> Iterator[Settings]:
    yield from installed(cluster, pack_settings)


# ------------------------------------------------------------- baselines


def test_weekly_exporter_gets_the_floor_and_daily_radiologist_a_threshold_above_ten(
        cluster: Cluster, pack: Settings) -> None:
    events = [export(ago(days=d, hours=3), "weekly", 1) for d in (2, 9, 16, 23)]
    # The hour a rule looks at is not part of the baseline it is compared with.
    events += [export(ago(minutes=m), "weekly", 1) for m in range(5, 55, 5)]
    # Ten studies a day, every day, in three batches (4 + 3 + 3).
    for d in range(1, 30):
        for hours, n in ((2, 4), (6, 3), (10, 3)):
            events.append(export(ago(days=d, hours=hours), "radiologist", n))
    send(cluster, pack, events)

    report = run_baselines(cluster, pack)

    got = docs(cluster, pack.index("baselines"), baseline__metric="export")
    weekly, radiologist = got["export:weekly"]["baseline"], got["export:radiologist"]["baseline"]
    assert (weekly["samples"], weekly["total"], weekly["hourly_p95"]) == (4, 4.0, 1.0)
    assert weekly["threshold"] == 5.0  # max(floor 5, 5 x p95 1)
    assert radiologist["samples"] == 87 and radiologist["hourly_p95"] == 4.0
    assert radiologist["threshold"] == 20.0
    assert 9.5 < radiologist["daily_mean"] < 10.0  # 290 studies over 30 days minus the excluded hour
    # The behaviour the rule needs: ten studies in an hour is far above one user, normal for the other.
    assert weekly["threshold"] < 10 < radiologist["threshold"]
    assert report.users["export"] == 2 and report.written == 2 and report.deleted == 0
    assert got["export:weekly"]["user"]["name"] == "weekly"


def test_an_export_still_going_on_is_not_its_own_baseline(cluster: Cluster, pack: Settings) -> None:
    # A first-ever burst that began 100 minutes ago and goes on: 5 studies in the hour before the
    # rule's window, 35 in it. Counted, its first hour would be its baseline (threshold 25 < 35).
    burst = [export(ago(minutes=m), "first.burst", 1) for m in (100, 95, 90, 85, 70)]
    burst += [export(ago(minutes=50 - m), "first.burst", 1) for m in range(35)]
    # The same burst by a user who exported 2 studies a week before: the baseline is that week.
    known = [export(ago(days=7, hours=4), "known", 2)]
    known += [export(dt.datetime.fromisoformat(e["timestamp"]), "known", 1) for e in burst]
    send(cluster, pack, burst + known)

    report = run_baselines(cluster, pack)

    got = docs(cluster, pack.index("baselines"), baseline__metric="export")
    assert "export:first.burst" not in got, got.get("export:first.burst")
    assert report.users["export"] == 1
    baseline = got["export:known"]["baseline"]
    assert (baseline["samples"], baseline["total"], baseline["threshold"]) == (1, 2.0, 10.0)
    assert baseline["ongoing_units"] == 1  # the burst's hour before the window, left out


def test_pages_of_1000_cover_2500_users_with_users_straddling_pages(cluster: Cluster, pack: Settings) -> None:
    users = [f"user{i:05d}" for i in range(2500)]
    # Three active hours per user: 7500 buckets, so page edges fall inside users.
    send(cluster, pack, [export(ago(days=1 + h), u, 1 + h) for u in users for h in range(3)])

    report = run_baselines(cluster, pack, page_size=1000)

    assert report.users["export"] == 2500
    assert report.pages >= 8  # 7500 export buckets alone need 8 pages of 1000
    got = docs(cluster, pack.index("baselines"), baseline__metric="export")
    assert len(got) == 2500
    assert {(d["baseline"]["samples"], d["baseline"]["total"]) for d in got.values()} == {(3, 6.0)}


def test_users_with_nothing_left_in_the_window_are_removed(cluster: Cluster, pack: Settings) -> None:
    send(cluster, pack, [export(ago(hours=3), "active", 2), export(ago(days=29, hours=12), "fading", 1),
                         share(ago(days=29, hours=12), "fading", ["x@partner.example"])])
    first = run_baselines(cluster, pack)
    assert first.deleted == 0
    assert set(docs(cluster, pack.index("baselines"))) == {
        "export:active", "export:fading", "share:fading", "external_recipients:fading"}

    # A day later the fading user's only events are out of the 30-day window. Pages of 2 make
    # the stale sweep page too.
    later = run_baselines(cluster, pack, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1),
                          page_size=2)

    assert later.deleted == 3
    left = docs(cluster, pack.index("baselines"))
    assert set(left) == {"export:active"}
    assert left["export:active"]["job"]["run_id"] == later.run_id


def test_share_baselines_count_links_and_distinct_external_recipients(
        cluster: Cluster, cluster_url: str, unique: str) -> None:
    settings = make_settings(cluster_url, f"pgj{unique}", f"j{unique}", internal_domains=["hospital.example"])
    for s in installed(cluster, settings):
        day = ago(days=3, minutes=30)  # bins end on the hour of the run: keep the three in one
        send(cluster, s, [
            share(day, "sharer", ["a@partner.example", "colleague@hospital.example"]),
            share(day + dt.timedelta(minutes=5), "sharer", ["a@partner.example", "b@partner.example"]),
            share(day + dt.timedelta(minutes=10), "sharer", ["c@partner.example"]),
            share(ago(days=5), "sharer", ["colleague@hospital.example"]),  # internal only: not external
        ])
        run_baselines(cluster, s)
        got = docs(cluster, s.index("baselines"))
        links = got["share:sharer"]["baseline"]
        assert (links["samples"], links["total"], links["hourly_p95"]) == (2, 4.0, 3.0)
        assert links["threshold"] == 15.0
        recipients = got["external_recipients:sharer"]["baseline"]
        # a, b, c on one day: the hospital colleague is not counted, a is counted once.
        assert (recipients["unit"], recipients["samples"], recipients["daily_p95"]) == ("day", 1, 3.0)


# -------------------------------------------------------------- profiles


def profile(got: dict[str, dict[str, Any]], kind: str, user: str, value: str) -> dict[str, Any]:
    return got[profile_id(kind, user, value)]


def test_profiles_hold_known_countries_regions_and_devices(cluster: Cluster, pack: Settings) -> None:
    send(cluster, pack, [login(ago(days=d), "known", GB) for d in (80, 40, 3)]
         + [login(ago(days=d), "known", US, "OtherBrowser/1.0") for d in (20,)]
         + [event(ago(days=2), "user-login", "known", outcome="failure", source_ip=CN)])

    report = run_profiles(cluster, pack)

    got = docs(cluster, pack.index("profiles"), user__name="known")
    kinds = {(d["profile"]["kind"], d["profile"]["value"]) for d in got.values()}
    assert {(k, v) for k, v in kinds if k != "device"} == {
        ("country", "GB"), ("country", "US"), ("region", "GB-OXF"), ("region", "US-ID")}
    assert sum(1 for k, _ in kinds if k == "device") == 2  # two user agents / networks
    gb = profile(got, "country", "known", "GB")["profile"]
    assert gb["count"] == 3 and gb["new"] is False
    assert gb["first_seen"] < gb["last_seen"]
    assert not any(d["profile"]["value"] == "CN" for d in got.values())  # a failed login teaches nothing
    assert report.markers == 0


def test_new_country_for_a_known_user_is_marked_a_returning_one_is_not(cluster: Cluster, pack: Settings) -> None:
    send(cluster, pack, [
        *[login(ago(days=d), "traveler", GB) for d in (60, 30, 2)],
        login(ago(minutes=5), "traveler", CN),
        login(ago(days=50), "returner", SE),
        *[login(ago(days=d), "returner", GB) for d in (40, 10, 1)],
        login(ago(minutes=5), "returner", SE),
        login(ago(minutes=4), "newcomer", US),  # a brand-new account: nothing to differ from
    ])

    report = run_profiles(cluster, pack)

    got = docs(cluster, pack.index("profiles"))
    cn = profile(got, "country", "traveler", "CN")
    assert cn["profile"]["new"] is True
    assert cn["@timestamp"] == cn["profile"]["first_seen"]  # the marker is dated when it happened
    assert profile(got, "region", "traveler", "CN-JL")["profile"]["new"] is True
    assert profile(got, "country", "traveler", "GB")["profile"]["new"] is False
    # The same browser from another network is another device (docs/schema.md device.id).
    traveler_devices = {d["profile"]["value"]: d["profile"]["new"] for d in got.values()
                        if d["user"]["name"] == "traveler" and d["profile"]["kind"] == "device"}
    assert sorted(traveler_devices.values()) == [False, True]

    se = profile(got, "country", "returner", "SE")["profile"]
    assert se["new"] is False and se["count"] == 2
    assert profile(got, "country", "newcomer", "US")["profile"]["new"] is False
    assert {d["user"]["name"] for d in got.values() if d["profile"]["new"]} == {"traveler"}
    assert report.markers == 3  # country, region and device of the traveler

    # Once the lookback has passed, the marker is cleared (the profile stays).
    later = run_profiles(cluster, pack, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2))
    assert later.markers == 0
    assert profile(docs(cluster, pack.index("profiles")), "country", "traveler", "CN")["profile"]["new"] is False


def test_external_recipients_profile(cluster: Cluster, cluster_url: str, unique: str) -> None:
    settings = make_settings(cluster_url, f"pgr{unique}", f"r{unique}", internal_domains=["hospital.example"])
    for s in installed(cluster, settings):
        send(cluster, s, [
            share(ago(days=20), "sharer", ["old@partner.example"]),
            share(ago(minutes=6), "sharer", ["Fresh@Elsewhere.example", "colleague@hospital.example"]),
            share(ago(minutes=3), "sharer", ["old@partner.example"]),
            share(ago(days=1), "insider", ["colleague@hospital.example"]),
        ])
        report = run_profiles(cluster, s)
        got = docs(cluster, s.index("profiles"), profile__kind="recipient")
        values = {(d["user"]["name"], d["profile"]["value"]): d["profile"] for d in got.values()}
        # recipients are keyed at ingest (trimmed, lower-cased: docs/identity.md); the hospital
        # colleague is internal and left out
        assert set(values) == {("sharer", "old@partner.example"), ("sharer", "fresh@elsewhere.example")}
        assert values[("sharer", "old@partner.example")]["count"] == 2
        assert values[("sharer", "old@partner.example")]["new"] is False
        assert values[("sharer", "fresh@elsewhere.example")]["new"] is True
        assert report.users["recipient"] == 1


def test_stale_profile_values_are_removed(cluster: Cluster, pack: Settings) -> None:
    send(cluster, pack, [login(ago(days=89, hours=12), "leaver", SE), login(ago(days=1), "stayer", GB)])
    run_profiles(cluster, pack)
    assert {d["user"]["name"] for d in docs(cluster, pack.index("profiles")).values()} == {"leaver", "stayer"}

    later = run_profiles(cluster, pack, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))

    assert later.deleted == 3  # the leaver's country, region and device
    assert {d["user"]["name"] for d in docs(cluster, pack.index("profiles")).values()} == {"stayer"}


def content(got: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The documents as the rules read them: everything but the stamp of the run that wrote them."""
    return {doc_id: {k: v for k, v in doc.items() if k != "job"} for doc_id, doc in got.items()}


def test_an_incremental_run_writes_what_a_full_run_would_for_the_users_that_changed_only(
        cluster: Cluster, pack: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # arrivals are looked at again from a minute before the previous run: the events of the
    # first run, sent a moment before it, would count as arrivals of the second
    monkeypatch.setattr(profiles, "ARRIVAL_OVERLAP_SECONDS", 0)
    send(cluster, pack, [
        *[login(ago(days=d), "steady", GB) for d in (30, 2)],
        *[login(ago(days=d), "quiet", GB) for d in (20, 3)],
        *[login(ago(days=d), "traveler", GB) for d in (40, 4)],
        login(ago(minutes=55), "traveler", CN),  # marked now, no longer 10 minutes later
        login(ago(days=90) + dt.timedelta(minutes=5), "ager", GB), login(ago(days=9), "ager", GB),
        login(ago(days=90) + dt.timedelta(minutes=5), "leaver", SE),  # leaves the window in 5 minutes
    ])
    first = run_profiles(cluster, pack)
    assert first.mode == "full" and first.markers == 3
    before = docs(cluster, pack.index("profiles"))

    send(cluster, pack, [login(ago(minutes=1), "quiet", US),  # a new country: marked
                         login(ago(days=15), "latecomer", SE), login(ago(days=25), "latecomer", GB)])  # late
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)
    inc = run_profiles(cluster, pack, now=later)
    after = docs(cluster, pack.index("profiles"))

    assert inc.mode == "incremental"
    # steady's documents are left as they were; the others rewritten, the leaver's deleted
    rewritten = {d["user"]["name"] for i, d in after.items() if d["job"] != before.get(i, {}).get("job")}
    assert rewritten == {"quiet", "traveler", "ager", "latecomer"}
    assert inc.deleted == 3 and not any(d["user"]["name"] == "leaver" for d in after.values())
    assert inc.written == sum(1 for d in after.values() if d["user"]["name"] in rewritten)
    assert profile(after, "country", "quiet", "US")["profile"]["new"] is True
    assert profile(after, "country", "traveler", "CN")["profile"]["new"] is False
    assert profile(after, "country", "ager", "GB")["profile"]["count"] == 1
    assert profile(after, "country", "latecomer", "GB")["profile"]["new"] is False  # its first value
    assert inc.markers == 3  # quiet's country, region and device

    full = run_profiles(cluster, pack, now=later, full=True)
    assert full.mode == "full" and full.deleted == 0 and full.markers == 3
    assert content(docs(cluster, pack.index("profiles"))) == content(after)


def test_a_run_is_full_again_when_what_profiles_depend_on_changed(cluster: Cluster, pack: Settings) -> None:
    send(cluster, pack, [login(ago(days=2), "someone", GB)])
    assert run_profiles(cluster, pack).mode == "full"  # no checkpoint yet
    assert run_profiles(cluster, pack).mode == "incremental"
    assert run_profiles(cluster, pack, lookback_seconds=7200).mode == "full"  # another lookback
    other = pack.model_copy(update={"internal_domains": ["hospital.example"]})
    assert run_profiles(cluster, other, lookback_seconds=7200).mode == "full"
    assert run_profiles(cluster, other, lookback_seconds=7200).mode == "incremental"
    daily = pack.model_copy(update={"engine": pack.engine.model_copy(update={"profiles_full_every": "0s"})})
    assert run_profiles(cluster, daily).mode == "full"


# --------------------------------------------------------------- the CLI


def test_cli_loop_runs_then_stops_cleanly_on_sigterm(cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    send(cluster, pack, [export(ago(days=2), "cli-user", 3), login(ago(days=2), "cli-user", GB)])
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"id_prefix": pack.id_prefix, "namespace": pack.namespace,
                                    "cluster": {"url": pack.cluster.url}}))
    env = {**os.environ, "PACSGUARD_SETTINGS": str(site), "PACSGUARD_SALT": "test-salt-0123456789abcdef"}
    proc = subprocess.Popen([sys.executable, "-m", "pacsguard.cli", "--json", "jobs", "run", "all",
                             "--every", "5m"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]  # one run: baselines, profiles
        proc.send_signal(signal.SIGTERM)  # while it sleeps until the next run
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert [line["job"] for line in lines] == ["baselines", "profiles"]
    assert lines[0]["users"]["export"] == 1 and lines[1]["users"]["country"] == 1
    assert json.loads(out) == {"ok": True, "stopped": True, "runs": 1}


def test_cli_once_without_an_install_says_what_to_do(cluster_url: str, unique: str, tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"id_prefix": f"pgnone{unique}", "namespace": f"n{unique}",
                                    "cluster": {"url": cluster_url}}))
    env = {**os.environ, "PACSGUARD_SETTINGS": str(site), "PACSGUARD_SALT": "x" * 24}
    res = subprocess.run([sys.executable, "-m", "pacsguard.cli", "jobs", "run", "baselines"], check=False,
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 1
    assert "does not exist" in res.stderr and "pacsguard install" in res.stderr
    assert "Traceback" not in res.stderr
