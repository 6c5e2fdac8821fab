"""One person, one study, one recipient (issue 18, docs/identity.md), on the real node, with the
real formats: Keycloak console lines as Keycloak 26 prints them, and one export audited twice,
by the archive's DICOM audit (ATNA XML through the collector's conversion) and by FHIR.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from directory_pack import csv_directory_pack, pack_rule, send_messages
from pacsguard.collector.syslog_input import convert_frame
from pacsguard.core.connection import Cluster
from pacsguard.core.content import content_path
from pacsguard.core.settings import Settings
from pacsguard.engines import run_monitor
from pacsguard.jobs import run_job
from pacsguard.rules.compiler import render_monitor
from pacsguard.services.backtest import backtest
from pacsguard.services.watch import Watcher

pytestmark = pytest.mark.cluster

REALM = "6f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
CLIENT = "a8b7c6d5-e4f3-4201-9f8e-7d6c5b4a3928"
ADA_ID = "e18a7ec9-2f96-42f1-9063-e53b396342ab"
NICK_ID = "2ca23e5c-56ad-4b55-badb-87706a54dc80"
STRANGER_ID = "77777777-0000-4000-8000-000000000777"
DIRECTORY_CSV = f"""username,email,roles,enabled,created,id
ada,Ada@Hospital.Example,pacs-admin,true,2026-01-05T08:00:00Z,{ADA_ID}
nick,nick@hospital.example,radiologist,true,2026-02-01,{NICK_ID}
"""


@pytest.fixture
def pack(cluster_url: str, unique: str, tmp_path: Path) -> Iterator[Settings]:
    with csv_directory_pack(cluster_url, f"pgi{unique}", f"i{unique}", DIRECTORY_CSV, tmp_path) as settings:
        yield settings


def send(cluster: Cluster, settings: Settings, messages: list[str]) -> None:
    send_messages(cluster, settings, messages)
    assert cluster.request("GET", f"/{settings.index('failures')}/_count")["count"] == 0


def kc_time(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]


def login_error(when: dt.datetime, username: str, user_id: str) -> str:
    """A failed login as Keycloak 26 prints it: the name as typed, the account's userId."""
    return (f'{kc_time(when)} WARN  [org.keycloak.events] (executor-thread-7) type="LOGIN_ERROR", '
            f'realmId="{REALM}", realmName="north", clientId="pacs-viewer", userId="{user_id}", '
            f'ipAddress="192.0.2.44", error="invalid_user_credentials", auth_method="openid-connect", '
            f'auth_type="code", redirect_uri="https://viewer.north.example/", code_id="{uuid.uuid4()}", '
            f'username="{username}", authSessionParallelExecutions="0"')


def role_grant(when: dt.datetime, actor_id: str, target_id: str) -> str:
    """An admin event as Keycloak 26 prints it: actor and target by id only."""
    rep = '[{\\"id\\":\\"64941a01\\",\\"name\\":\\"pacs-admin\\",\\"composite\\":false,\\"clientRole\\":false}]'
    return (f'{kc_time(when)} DEBUG [org.keycloak.events] (executor-thread-3) operationType="CREATE", '
            f'realmId="{REALM}", realmName="north", clientId="{CLIENT}", userId="{actor_id}", '
            f'ipAddress="192.0.2.10", resourceType="REALM_ROLE_MAPPING", '
            f'resourcePath="users/{target_id}/role-mappings/realm", representation="{rep}"')


def test_a_failure_burst_typed_in_three_cases_is_one_account(pack: Settings) -> None:
    settings = pack
    cluster = Cluster.connect(settings.cluster)
    now = dt.datetime.now(dt.timezone.utc)
    one_account = [login_error(now - dt.timedelta(seconds=30 * i), name, ADA_ID)
                   for i, name in enumerate(["Alice", "ALICE", "alice"] * 3)][:8]
    three_accounts = [login_error(now - dt.timedelta(seconds=30 * i), name, f"{uid}-0000-4000-8000-000000000000")
                      for i, (name, uid) in enumerate([("bob", "b0b0b0b0"), ("carol", "ca401ca4"),
                                                      ("dave", "da7eda7e")] * 3)][:8]
    send(cluster, settings, one_account + three_accounts)

    fired = run_monitor(cluster, render_monitor(pack_rule("1a"), settings), period_end=now).fired()

    assert fired == {"alice"}
    hit = cluster.request("POST", f"/{settings.index('events_data_stream')}/_search", body={
        "query": {"term": {"pacs.identity.user_name": "ALICE"}}, "size": 1})["hits"]["hits"][0]["_source"]
    assert (hit["user"]["name"], hit["user"]["id"], hit["pacs"]["identity"]["user_name"]) == ("alice", ADA_ID, "ALICE")


STUDY_ROOT = "2.25.11833960212763489054176349205613"


def atna_export(when: dt.datetime, user: str, study: str) -> str:
    """The archive's DICOM audit of one study's export, converted as the collector does."""
    xml = (content_path("pipelines", "atna", "_dev", "test", "pipeline", "export-to-media.xml").read_text()
           .replace("2026-03-02T11:30:00.000Z", when.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
           .replace('UserID="clerk.nowak"', f'UserID="{user}"')
           .replace("2.25.118339602127634890541763492056133417210", study))
    return convert_frame(xml.encode(), max_bytes=1 << 20, strict=False).message


def fhir_export(when: dt.datetime, user: str, study: str) -> str:
    """The FHIR AuditEvent of the same export (IHE BALP: 110106, the study as an entity)."""
    event = json.loads(content_path("pipelines", "fhir", "_dev", "test", "pipeline", "export-to-media.json")
                       .read_text())
    event["id"] = f"export-{study[-6:]}"
    event["recorded"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    event["agent"][0]["who"]["identifier"]["value"] = user
    event["entity"].append({"what": {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"}},
                            "type": {"system": "http://hl7.org/fhir/resource-types", "code": "ImagingStudy"}})
    return json.dumps(event)


def both_sources(when: dt.datetime, user: str, studies: list[str]) -> list[str]:
    return [m for i, s in enumerate(studies)
            for m in (atna_export(when + dt.timedelta(seconds=i), user, s),
                      fhir_export(when + dt.timedelta(seconds=i, milliseconds=400), user, s))]


def studies(tag: str, n: int) -> list[str]:
    return [f"{STUDY_ROOT}{tag}{i:03d}" for i in range(n)]


def hourly_history(now: dt.datetime, user: str, per_hour: int, audited_twice: bool) -> list[str]:
    """Three past hours of `per_hour` studies each (a baseline of max(5, 5 x 3) = 15 for 3)."""
    out = []
    for day in (2, 3, 4):
        when = now - dt.timedelta(days=day)
        batch = studies(f"9{day}", per_hour)
        out += both_sources(when, user, batch) if audited_twice else [fhir_export(when, user, s) for s in batch]
    return out


def baseline_threshold(cluster: Cluster, settings: Settings, user: str) -> float:
    hits = cluster.request("POST", f"/{settings.index('baselines')}/_search", body={"query": {"bool": {"filter": [
        {"term": {"user.name": user}}, {"term": {"baseline.metric": "export"}}]}}})["hits"]["hits"]
    return float(hits[0]["_source"]["baseline"]["threshold"])


def test_one_export_audited_by_two_sources_counts_its_studies_once(pack: Settings) -> None:
    settings = pack
    cluster = Cluster.connect(settings.cluster)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    send(cluster, settings, hourly_history(now, "clerk.nowak", 3, audited_twice=False)
         + both_sources(now - dt.timedelta(minutes=20), "clerk.nowak", studies("1", 10)))
    run_job(cluster, settings, "baselines", now=now)
    cluster.request("POST", f"/{settings.index('baselines')}/_refresh")
    assert baseline_threshold(cluster, settings, "clerk.nowak") == 15
    events = cluster.request("POST", f"/{settings.index('events_data_stream')}/_count", body={"query": {"range": {
        "@timestamp": {"gte": (now - dt.timedelta(hours=1)).isoformat()}}}})["count"]
    assert events == 20

    for signal in ("4a", "4b"):
        run = run_monitor(cluster, render_monitor(pack_rule(signal), settings), period_end=now)
        assert run.fired() == set(), (signal, [(b.entity, b.values) for t in run.triggers for b in t.buckets])

    # sixteen distinct studies, some audited by both sources, some by one: 4a
    more = studies("2", 16)
    send(cluster, settings, both_sources(now - dt.timedelta(minutes=10), "clerk.kowal", more[:8])
         + [atna_export(now - dt.timedelta(minutes=9), "clerk.kowal", s) for s in more[8:12]]
         + [fhir_export(now - dt.timedelta(minutes=8), "clerk.kowal", s) for s in more[12:]])
    run = run_monitor(cluster, render_monitor(pack_rule("4a"), settings), period_end=now)
    assert run.fired() == {"clerk.kowal"}
    assert next(b.count for t in run.triggers for b in t.buckets if b.entity == "clerk.kowal") == 16


def test_the_baseline_of_exports_audited_twice_counts_each_study_once(pack: Settings) -> None:
    settings = pack
    cluster = Cluster.connect(settings.cluster)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    send(cluster, settings, hourly_history(now, "clerk.nowak", 3, audited_twice=True))

    run_job(cluster, settings, "baselines", now=now)
    cluster.request("POST", f"/{settings.index('baselines')}/_refresh")

    # 3 distinct studies an hour (6 events): max(floor 5, 5 x 3)
    assert baseline_threshold(cluster, settings, "clerk.nowak") == 15


def share(when: dt.datetime, user: str, recipients: list[str]) -> str:
    return json.dumps({"timestamp": when.isoformat(), "app": "cloudpacs", "action": "share-create",
                       "outcome": "success", "user": user, "share": {"id": str(uuid.uuid4()),
                                                                       "recipients": recipients}})


def test_recipients_differing_in_case_and_spaces_are_one_recipient(pack: Settings) -> None:
    settings = pack
    cluster = Cluster.connect(settings.cluster)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    spellings = ["Bob@Clinic.Example", " bob@clinic.example", "BOB@CLINIC.EXAMPLE ", "carol@clinic.example",
                 "Carol@Clinic.Example"]
    send(cluster, settings, [share(now - dt.timedelta(minutes=30 - i), "ines", [r])
                             for i, r in enumerate(spellings)])
    run_job(cluster, settings, "profiles", now=now)
    cluster.request("POST", f"/{settings.index('profiles')}/_refresh")

    assert run_monitor(cluster, render_monitor(pack_rule("5b"), settings), period_end=now).fired() == set()
    hits = cluster.request("POST", f"/{settings.index('events_data_stream')}/_search",
                           body={"size": 10, "sort": ["@timestamp"]})["hits"]["hits"]
    assert [h["_source"]["pacs"]["share"]["recipients"] for h in hits] == [
        ["bob@clinic.example"]] * 3 + [["carol@clinic.example"]] * 2
    assert hits[0]["_source"]["pacs"]["identity"]["recipients"] == ["Bob@Clinic.Example"]


def alert_docs(cluster: Cluster, settings: Settings, signal: str) -> list[dict[str, Any]]:
    cluster.request("POST", f"/{settings.index('alerts')}/_refresh")
    return [h["_source"] for h in cluster.request("POST", f"/{settings.index('alerts')}/_search", body={
        "size": 20, "query": {"term": {"rule.signal": signal}}})["hits"]["hits"]]


def test_a_role_grant_alert_names_actor_and_target_live(pack: Settings) -> None:
    settings = pack
    cluster = Cluster.connect(settings.cluster)
    run_job(cluster, settings, "directory")  # the directory knows both accounts, then the grant happens
    cluster.request("POST", f"/{settings.index('directory')}/_refresh")
    now = dt.datetime.now(dt.timezone.utc)
    send(cluster, settings, [role_grant(now - dt.timedelta(seconds=20), ADA_ID, NICK_ID),
                             role_grant(now - dt.timedelta(seconds=10), ADA_ID, STRANGER_ID)])

    watcher = Watcher(cluster, settings, run_jobs=False)
    watcher.rules = [s for s in watcher.rules if s.compiled.signal == "3"]
    watcher.tick()
    watcher.close()

    by_target = {a["entity"]["keys"][2]: a for a in alert_docs(cluster, settings, "3")}
    assert set(by_target) == {NICK_ID, STRANGER_ID}
    known, unknown = by_target[NICK_ID], by_target[STRANGER_ID]
    text = known["message"]["text"]
    assert f"Actor (user.name): ada (id {ADA_ID})" in text
    assert f"Target (user.target.name): nick (id {NICK_ID})" in text
    assert known["entity"]["names"] == {"user.name": f"ada (id {ADA_ID})", "user.target.name": f"nick (id {NICK_ID})"}
    assert f"Target (user.target.name): {STRANGER_ID} (an id the directory does not know)" in unknown["message"]["text"]


def test_backtest_replays_the_directory_job(pack: Settings) -> None:
    settings = pack
    cluster = Cluster.connect(settings.cluster)
    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    grant_at = now - dt.timedelta(hours=2)
    send(cluster, settings, [role_grant(grant_at, ADA_ID, NICK_ID)])

    report = backtest(cluster, settings, grant_at - dt.timedelta(minutes=5), grant_at + dt.timedelta(minutes=10),
                      step="5m", users=1)

    assert [(a.signal, a.keys) for a in report.alerts] == [("3", ("ada", "role-grant", "nick"))]
