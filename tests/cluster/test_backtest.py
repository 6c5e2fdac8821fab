"""`pacsguard simulate` + `pacsguard backtest` on the real node: a small labelled hospital
(3 days, 20 users, every attack kind and its near-misses) shipped through the collector's
file inputs, jobs replayed as of every 15 minutes and every rule run as of every 5 minutes.

What a user would check before tuning a threshold: every labelled attack is detected,
no near-miss fires, and false alerts stay within 1 per 1,000 user-days.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.services.backtest import as_text, backtest, load_labels
from pacsguard.services.install import install
from pacsguard.services.simulate import ship, simulate, write

ALL_SIGNALS = {"1a", "1b", "1c", "2a", "2b", "3", "4a", "4b", "4c", "5a", "5b"}


def test_every_attack_is_detected_no_near_miss_fires_and_false_alerts_stay_in_bound(
        cluster: Cluster, pack_settings: Settings, tmp_path: Path) -> None:
    install(cluster, pack_settings, allow_missing_plugins=True)
    sim = simulate(days=3, users=20, seed=11, end=dt.datetime.now(dt.timezone.utc))
    meta = write(sim, tmp_path, seed=11)
    shipped = ship(cluster, pack_settings, tmp_path, meta, failures_key=os.urandom(32))
    assert shipped["indexed"] == sum(meta["events"].values()), shipped
    assert meta["events"]["atna"] > 40 and shipped["directory_accounts"] == meta["users"]
    assert shipped["failed"] == 0, shipped

    labels = load_labels(tmp_path / "labels.jsonl")
    assert {lb.signal for lb in labels if lb.kind == "attack"} == ALL_SIGNALS
    assert len([lb for lb in labels if lb.kind == "near-miss"]) >= 9
    report = backtest(cluster, pack_settings, sim.start, sim.end, step="5m", jobs_every="15m", labels=labels,
                      users=meta["users"])
    scores = report.as_dict()["scores"]
    text = as_text(report)

    assert scores["recall"] == 1.0, text
    assert {s for s, v in scores["per_signal"].items() if v["detected"] == v["attacks"]} == ALL_SIGNALS, text
    assert scores["near_miss_alerts"] == 0, text
    assert scores["false_per_1000_user_days"] <= 1.0, text
    # the labelled travel raises its new-country alert, and it is counted as explained, not as false
    assert scores["benign_unusual_alerts"] == 1, text
    assert "recall (attacks): " in text and "per 1,000 user-days" in text
