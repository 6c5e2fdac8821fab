"""The pacsguard engine renders search inputs locally: a scheduler running every rule every
minute must never meet the cluster's dynamic-script limit (75 compilations per 5 minutes)."""

from __future__ import annotations

import datetime as dt

import pytest

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.engines import CORE, run_monitor
from pacsguard.rules.compiler import compile_rules
from pacsguard.services.install import install

pytestmark = pytest.mark.cluster


def compilations(cluster: Cluster) -> int:
    stats = cluster.request("GET", "/_nodes/stats/script")["nodes"]
    return sum(int(node["script"]["compilations"]) for node in stats.values())


def test_hundreds_of_rule_runs_compile_no_new_scripts(cluster: Cluster, pack_settings: Settings) -> None:
    install(cluster, pack_settings, allow_missing_plugins=True)
    rules = compile_rules(pack_settings)
    now = dt.datetime.now(dt.timezone.utc)
    for c in rules:  # the first run of each trigger script compiles it once; the cluster caches it
        run_monitor(cluster, c.monitor, now, engine=CORE)
    before = compilations(cluster)
    for i in range(12):  # 120 rule runs: with `_render/template` each would compile (429 after 75)
        for c in rules:
            run = run_monitor(cluster, c.monitor, now - dt.timedelta(seconds=i), engine=CORE)
            assert run.error is None
    assert compilations(cluster) - before < 5
