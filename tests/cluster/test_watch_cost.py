"""What a `watch` rule run costs the cluster follows activity: a quiet run leaves the alerts
index alone, and the baseline rule (4b) pages only through the accounts with recent exports,
not through the baselines of every account."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.jobs import run_job
from pacsguard.services.install import install, uninstall
from pacsguard.services.watch import RuleState, Watcher
from testnode import make_settings

pytestmark = pytest.mark.cluster


def recording(cluster: Cluster) -> list[tuple[str, str]]:
    """Every request the cluster object sends from now on, as (method, path)."""
    sent: list[tuple[str, str]] = []
    real: Callable[..., Any] = cluster.request

    def request(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        sent.append((method, path))
        return real(method, path, *args, **kwargs)

    cluster.request = request  # type: ignore[method-assign]
    return sent


def rule(watcher: Watcher, signal: str) -> RuleState:
    return next(s for s in watcher.rules if s.compiled.signal == signal)


def test_a_quiet_rule_run_leaves_the_alerts_index_alone(cluster: Cluster, pack: Settings) -> None:
    watcher = Watcher(cluster, pack, run_jobs=False)
    state = rule(watcher, "1a")
    watcher.run_rule(state)  # the first run looks the open alerts up: none
    sent = recording(cluster)
    watcher.run_rule(state)
    watcher.close()
    assert state.last_error is None
    assert [r for r in sent if pack.index("alerts") in r[1]] == []


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_the_baseline_rule_pages_only_through_the_accounts_with_recent_exports(
        cluster_url: str, unique: str) -> None:
    settings = make_settings(cluster_url, f"pgc{unique}", f"c{unique}", detection={"composite_page_size": 2})
    cluster = Cluster.connect(settings.cluster)
    try:
        install(cluster, settings, allow_missing_plugins=True)
        now = dt.datetime.now(dt.timezone.utc)
        export = {"event": {"dataset": "pacs.audit", "action": "study-export", "outcome": "success"}}
        docs = [{**export, "@timestamp": iso(now - dt.timedelta(days=day, hours=3)), "user": {"name": f"u{n}"},
                 "pacs": {"study": {"uids": [f"2.25.{n}.{day}"], "count": 1}}} for n in range(12) for day in range(2, 9)]
        docs += [{**export, "@timestamp": iso(now - dt.timedelta(minutes=5 + i)), "user": {"name": "u3"},
                  "pacs": {"study": {"uids": [f"2.25.99.{i}"], "count": 1}}} for i in range(8)]
        stream = settings.index("events_data_stream")
        res = cluster.request("POST", f"/{stream}/_bulk", params={"pipeline": "_none", "refresh": "true"},
                              body="".join('{"create":{}}\n' + json.dumps(d) + "\n" for d in docs))
        assert not res["errors"]
        run_job(cluster, settings, "baselines")
        watcher = Watcher(cluster, settings, run_jobs=False)
        state = rule(watcher, "4b")
        sent = recording(cluster)
        watcher.run_rule(state, now)
        watcher.close()
        assert state.last_error is None
        alerts = cluster.request("POST", f"/{settings.index('alerts')}/_search",
                                 body={"query": {"term": {"rule.signal": "4b"}}})["hits"]["hits"]
        assert [a["_source"]["entity"]["value"] for a in alerts] == ["u3"]
        # twelve accounts have a baseline, one exported recently: at two buckets a page, paging
        # through every baseline takes seven searches per trigger, the one account two (the
        # page that holds it, and the empty one after it)
        indices = ",".join(state.compiled.monitor["inputs"][0]["search"]["indices"])
        searches = [r for r in sent if r == ("POST", f"/{indices}/_search")]
        assert len(searches) <= 2 * len(state.compiled.monitor["triggers"]), searches
    finally:
        uninstall(cluster, settings, purge=True)
