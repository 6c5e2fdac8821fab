"""Engines that run a compiled rule (an Alerting monitor body) once and say what fired.

Two engines, one rule: OpenSearch Alerting's own dry run where the plugin
runs (alerting.py), and core search where it does not (core.py). Both sit
behind `run_monitor`, which returns the same MonitorRun, so a parity test can
hold them side by side. The pack's alerting loop (watch.py) builds alert
state and delivery on top of the core engine.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pacsguard.core.connection import Cluster
from pacsguard.engines.result import ALERTING, CORE, Bucket, MonitorRun, TriggerResult

__all__ = ["ALERTING", "CORE", "Bucket", "MonitorRun", "TriggerResult", "run_monitor"]


def run_monitor(cluster: Cluster, monitor: dict[str, Any], period_end: dt.datetime | None = None,
                engine: str | None = None) -> MonitorRun:
    """Run a monitor body once. engine: ALERTING, CORE, or None (Alerting where the plugin runs)."""
    from pacsguard.engines import alerting, core

    if engine is None:
        plugins, _ = cluster.installed_components()
        engine = ALERTING if "opensearch-alerting" in plugins else CORE
    if engine == ALERTING:
        return alerting.dry_run(cluster, monitor)
    return core.run(cluster, monitor, period_end or dt.datetime.now(dt.timezone.utc))
