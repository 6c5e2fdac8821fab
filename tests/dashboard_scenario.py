"""One scenario for the dashboards and the console: events whose every panel count is known.

Loaded into an isolated install (its own id_prefix and namespace) through the
real pipeline, then the baseline/profile jobs and one run of the pacsguard
engine, so the alerts index holds real alerts. EXPECTED_* below are what the
scenario should produce in the window [now - 2h, now]; the history events
(days before) fall outside it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.jobs import run_job
from pacsguard.services.install import install
from pacsguard.services.scenarios import EventSpec, expand
from pacsguard.services.watch import Watcher

KEY = "dash"
GB, US, SE = "81.2.69.142", "8.8.8.8", "89.160.20.112"  # GeoLite2 2019: GB, US, SE

SPECS = [
    # logins: eve fails 9 times then succeeds (1a, 1c); probe fails 20 times from one IP (1a, 1b); bob 3 times
    EventSpec(at="-9m", count=9, every="20s", action="user-login", outcome="failure", user="eve", source_ip=GB),
    EventSpec(at="-5m", action="user-login", user="eve", source_ip=GB),
    EventSpec(at="-8m", count=20, every="10s", action="user-login", outcome="failure", user="probe", source_ip=US),
    EventSpec(at="-45m", count=3, every="60s", action="user-login", outcome="failure", user="bob", source_ip=SE),
    # amy: known in GB (20 days ago), now logs in twice from the US: a new country
    EventSpec(at="-20d", action="user-login", user="amy", source_ip=GB),
    EventSpec(at="-20m", count=2, every="60s", action="user-login", user="amy", source_ip=US),
    # data leaving: pat exports 16 studies (4a); rae downloads 5 x 2 studies, with a daily history
    EventSpec(at="-25m", count=16, every="60s", action="study-export", user="pat", roles=["radiographer"], studies=1),
    EventSpec(at="-30m", count=5, every="60s", action="study-download", user="rae", studies=2),
    EventSpec(at="-3h", action="study-export", user="rae", studies=1, days_before=10),
    # shares: sam makes 11 links to one external recipient (5a); kim shares with 3 external + 1 internal
    EventSpec(at="-20m", count=11, every="60s", action="share-create", user="sam", recipients=["x@ext.example"],
              external=True),
    EventSpec(at="-40m", action="share-create", user="kim", recipients=["r1@ext.example"], external=True),
    EventSpec(at="-39m", action="share-create", user="kim", recipients=["r2@ext.example"], external=True),
    EventSpec(at="-38m", action="share-create", user="kim", recipients=["r3@ext.example"], external=True),
    EventSpec(at="-37m", action="share-create", user="kim", recipients=["colleague@hospital.example"],
              external=False),
    # access control: ann grants pacs-admin to joe, creates ned, grants ned radiologist, changes a permission
    EventSpec(at="-15m", action="role-grant", user="ann", target_user="joe", roles_changed=["pacs-admin"]),
    EventSpec(at="-14m", action="user-create", user="ann", target_user="ned"),
    EventSpec(at="-13m", action="role-grant", user="ann", target_user="ned", roles_changed=["radiologist"]),
    EventSpec(at="-12m", action="permission-change", user="ann"),
]


def u(name: str) -> str:
    return f"{KEY}-{name}"


@dataclass
class Loaded:
    settings: Settings
    cluster: Cluster
    now: dt.datetime
    start: dt.datetime
    end: dt.datetime


def load(settings: Settings) -> Loaded:
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    seq = iter(range(10**6))
    events = [e for spec in SPECS for e in expand(spec, KEY, now, seq)]
    lines: list[str] = []
    for event in events:
        lines += [json.dumps({"create": {}}), json.dumps({"message": json.dumps(event)})]
    # one event no pipeline can take: it must land in the (restricted) failure index
    bad = {"timestamp": now.isoformat(), "app": "x", "action": "no-such-action", "user": u("bad")}
    lines += [json.dumps({"create": {}}), json.dumps({"message": json.dumps(bad)})]
    stream = settings.index("events_data_stream")
    res = cluster.request("POST", f"/{stream}/_bulk", body="\n".join(lines) + "\n", params={"refresh": "true"})
    assert not res.get("errors"), [i for i in res["items"] if i["create"].get("error")][:2]
    cluster.request("POST", f"/{stream},{settings.index('failures')}/_refresh")
    for job in ("baselines", "profiles"):
        run_job(cluster, settings, job, now=now)
    cluster.request("POST", f"/{settings.index('baselines')},{settings.index('profiles')}/_refresh")
    watcher = Watcher(cluster, settings, run_jobs=False)
    watcher.tick()
    watcher.close()
    cluster.request("POST", f"/{settings.index('alerts')}/_refresh")
    return Loaded(settings, cluster, now, now - dt.timedelta(hours=2), now + dt.timedelta(minutes=1))


# What the window's events should give, per panel (keys outermost first -> first metric).
EXPECTED: dict[str, dict[tuple[Any, ...], float]] = {
    "overview-events-by-source": {("generic",): 75},
    "overview-failures": {(): 1},
    "logins-failures-by-user": {(u("probe"),): 20, (u("eve"),): 9, (u("bob"),): 3},
    "logins-failures-by-ip": {(US,): 20, (GB,): 9, (SE,): 3},
    "logins-outcomes-by-user": {(u("eve"), "failed"): 9, (u("eve"), "succeeded"): 1, (u("probe"), "failed"): 20,
                                (u("bob"), "failed"): 3, (u("amy"), "succeeded"): 2},
    "logins-by-country": {("GB",): 1, ("US",): 2},
    "leaving-studies-per-user": {(u("pat"),): 16, (u("rae"),): 10},
    "leaving-share-links": {(u("sam"),): 11, (u("kim"),): 4},
    "leaving-external-recipients": {(u("sam"),): 1, (u("kim"),): 3},
    "acl-changes": {(u("ann"), "role-grant", u("joe")): 1, (u("ann"), "role-grant", u("ned")): 1,
                    (u("ann"), "user-create", u("ned")): 1},
    "acl-roles-granted": {("pacs-admin",): 1, ("radiologist",): 1},
}
# Time series: the total per series (the second key), whatever the interval.
EXPECTED_SERIES: dict[str, dict[str, float]] = {
    "overview-signals": {"1 login failures": 32, "2 successful logins": 3, "3 access-control changes": 4,
                         "4 exports and downloads": 21, "5 share links": 15},
    "acl-over-time": {"role-grant": 2, "user-create": 1, "permission-change": 1},
}
# Panels of the User investigation dashboard, with the account filter its control (or a link) sets.
EXPECTED_FOR_USER: dict[str, tuple[str, dict[tuple[Any, ...], float]]] = {
    "user-actions": (u("ned"), {("role-grant", "success"): 1, ("user-create", "success"): 1}),
    "user-sources": (u("eve"), {("81.2.69.142", "GB"): 10}),
}
