"""The user directory job on a real node, and what the rules make of it.

DICOM-like exports carry no roles: the 4a rule (bulk export by a non-admin) can only
tell an administrator by the directory. And a Keycloak admin event whose
representation is garbled is still indexed (tagged pacsguard-partial) and raises
signal 3, which reads only its action.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from directory_pack import csv_directory_pack, pack_rule, send_messages
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.engines import run_monitor
from pacsguard.jobs.schedule import JobName, run_once
from pacsguard.rules.compiler import render_monitor

pytestmark = pytest.mark.cluster

DIRECTORY_CSV = """username,email,roles,enabled,created
ada,ada@hospital.example,pacs-admin;radiologist,true,2026-01-05T08:00:00Z
nick,nick@hospital.example,radiologist,true,2026-02-01
"""


@pytest.fixture
def csv_pack(cluster_url: str, unique: str, tmp_path: Path) -> Iterator[Settings]:
    with csv_directory_pack(cluster_url, f"pgd{unique}", f"d{unique}", DIRECTORY_CSV, tmp_path) as settings:
        yield settings



def export(when: dt.datetime, user: str, studies: int) -> str:
    # generic JSON, as a viewer's audit log writes it: no roles
    uids = [f"1.2.826.0.1.3680043.8.498.{user_code(user)}{i}" for i in range(studies)]
    return json.dumps({"timestamp": when.isoformat(), "app": "cloudpacs", "action": "study-export",
                       "outcome": "success", "user": user, "studies": uids})


def user_code(user: str) -> int:
    return sum(ord(c) for c in user)


def test_an_admin_in_the_directory_exporting_40_studies_raises_no_4a(csv_pack: Settings) -> None:
    settings = csv_pack
    cluster = Cluster.connect(settings.cluster)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    send_messages(cluster, settings, [export(now - dt.timedelta(minutes=5), "ada", 40),
                             export(now - dt.timedelta(minutes=4), "nick", 40)])
    assert cluster.request("GET", f"/{settings.index('failures')}/_count")["count"] == 0
    monitor = render_monitor(pack_rule("4a"), settings)
    # Without a directory, the events alone cannot tell the admin: both fire.
    assert run_monitor(cluster, monitor, period_end=now).fired() == {"ada", "nick"}

    reports = run_once(cluster, settings, JobName.all, lookback_seconds=None, page_size=1000)

    assert [r.job for r in reports] == ["directory", "baselines", "profiles"]
    assert reports[0].users == {"accounts": 2, "admins": 1}
    entries = {h["_source"]["user"]["name"]: h["_source"] for h in cluster.request(
        "POST", f"/{settings.index('directory')}/_search", body={"size": 10})["hits"]["hits"]}
    assert {n: (e["directory"]["admin"], e["directory"]["source"], e["user"]["roles"]) for n, e in entries.items()} == {
        "ada": (True, "csv", ["pacs-admin", "radiologist"]), "nick": (False, "csv", ["radiologist"])}
    assert entries["ada"]["directory"]["last_seen"].startswith((now - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M"))
    assert entries["nick"]["directory"]["created"] == "2026-02-01T00:00:00Z"
    assert run_monitor(cluster, monitor, period_end=now).fired() == {"nick"}


def test_a_second_run_sweeps_an_account_gone_from_the_export(csv_pack: Settings) -> None:
    settings = csv_pack
    cluster = Cluster.connect(settings.cluster)
    run_once(cluster, settings, JobName.directory, lookback_seconds=None, page_size=1000)
    assert settings.sources.directory.csv_file is not None
    settings.sources.directory.csv_file.write_text("username,email,roles,enabled,created\nada,,pacs-admin,false,\n")

    (report,) = run_once(cluster, settings, JobName.directory, lookback_seconds=None, page_size=1000)

    assert (report.written, report.deleted) == (1, 1)
    hits = cluster.request("POST", f"/{settings.index('directory')}/_search", body={"size": 10})["hits"]["hits"]
    assert [(h["_source"]["user"]["name"], h["_source"]["directory"]["enabled"]) for h in hits] == [("ada", False)]


GARBLED_GRANT = (
    '{ts} DEBUG [org.keycloak.events] (executor-thread-1) operationType="CREATE", '
    'realmId="0ba152af-0b42-4fc3-9348-3a2312c11bbf", realmName="master", '
    'clientId="48668603-b6bb-4c98-98a4-a2e988349258", userId="e18a7ec9-2f96-42f1-9063-e53b396342ab", '
    'ipAddress="10.1.2.3", resourceType="REALM_ROLE_MAPPING", '
    'resourcePath="users/2ca23e5c-56ad-4b55-badb-87706a54dc80/role-mappings/realm", '
    'representation="[{{\\"id\\":\\"64941a01\\",\\"name\\":\\"pacs-adm')


def test_a_keycloak_admin_event_with_a_garbled_representation_raises_signal_3(csv_pack: Settings) -> None:
    settings = csv_pack
    cluster = Cluster.connect(settings.cluster)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    send_messages(cluster, settings, [GARBLED_GRANT.format(ts=now.strftime("%Y-%m-%d %H:%M:%S,000"))])

    assert cluster.request("GET", f"/{settings.index('failures')}/_count")["count"] == 0
    (hit,) = cluster.request("POST", f"/{settings.index('events_data_stream')}/_search")["hits"]["hits"]
    doc: dict[str, Any] = hit["_source"]
    assert doc["tags"] == ["pacsguard-partial"]
    assert "the quoted value of [representation] is not closed" in doc["error"]["message"]
    assert (doc["event"]["action"], doc["user"]["name"], doc["user"]["target"]["id"]) == (
        "role-grant", "e18a7ec9-2f96-42f1-9063-e53b396342ab", "2ca23e5c-56ad-4b55-badb-87706a54dc80")
    fired = run_monitor(cluster, render_monitor(pack_rule("3"), settings),
                        period_end=dt.datetime.now(dt.timezone.utc)).fired()
    assert any(e.startswith("e18a7ec9-2f96-42f1-9063-e53b396342ab") for e in fired), fired
