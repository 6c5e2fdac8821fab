"""The pure parts of the baselines and profiles jobs: statistics, new values, ids, recipients,
the bulk writer's retries and the loop (no cluster; the jobs on a node: tests/cluster/test_jobs.py)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from pacsguard.core.errors import ConnectionProblem, PacsguardError
from pacsguard.core.settings import load_settings
from pacsguard.jobs import JobReport, JobStopped
from pacsguard.jobs.baselines import settled
from pacsguard.jobs.profiles import Seen, default_lookback, new_values, profile_id
from pacsguard.jobs.recipients import internal_set, is_external
from pacsguard.jobs.schedule import loop
from pacsguard.jobs.stats import HOUR, baseline, percentile
from pacsguard.jobs.writer import BulkWriter


def test_percentile_is_nearest_rank() -> None:
    assert percentile([1, 1, 1, 1], 95) == 1.0
    assert percentile([3, 3, 4] * 29, 95) == 4.0
    assert percentile(list(range(1, 101)), 95) == 95.0
    assert percentile([], 95) == 0.0


def test_threshold_is_floor_or_multiplier_times_p95() -> None:
    window = 30 * 24 * HOUR
    weekly = baseline([1, 1, 1, 1], HOUR, window, multiplier=5, floor=5)
    assert weekly.threshold == 5.0 and weekly.samples == 4
    busy = baseline([4, 3, 3] * 30, HOUR, window, multiplier=5, floor=5)
    assert busy.threshold == 20.0 and busy.daily_mean == pytest.approx(10.0)
    assert baseline([], HOUR, window, multiplier=5, floor=5).threshold == 5.0


def test_settled_leaves_out_the_units_active_back_to_back_up_to_the_end() -> None:
    unit, end = HOUR * 1000, 100 * HOUR * 1000

    def buckets(*units_before_end: int) -> list[dict[str, Any]]:
        return [{"key": {"t": end - n * unit}, "doc_count": 1} for n in units_before_end]

    assert settled(buckets(1, 2, 3), end, unit, 12) == ([], 3)  # all of it still going on
    before, ongoing = settled(buckets(1, 2, 5, 9), end, unit, 12)
    assert ongoing == 2 and [b["key"]["t"] for b in before] == [end - 5 * unit, end - 9 * unit]
    assert settled(buckets(2, 3), end, unit, 12) == (buckets(2, 3), 0)  # an idle unit before the end: settled
    # several buckets per unit (external recipients: day x recipient) go together
    per_recipient = [{"key": {"t": end - unit, "recipient": r}} for r in "ab"] + [{"key": {"t": end - 4 * unit,
                                                                                          "recipient": "c"}}]
    assert settled(per_recipient, end, unit, 12) == (per_recipient[2:], 1)
    # an account active every hour: at most max_units are left out, the rest is its baseline
    always = buckets(*range(1, 49))
    before, ongoing = settled(always, end, unit, 12)
    assert ongoing == 12 and len(before) == 36 and before[0]["key"]["t"] == end - 13 * unit


def test_new_values_need_an_earlier_value_and_a_recent_first_seen() -> None:
    day = 86_400_000
    now = 100 * day
    lookback = now - 15 * 60_000
    gb, cn = Seen("GB", 10 * day, now - 60_000, 9), Seen("CN", now - 120_000, now - 120_000, 1)
    assert new_values([gb, cn], lookback) == {"CN"}
    assert new_values([cn], lookback) == set()  # a brand-new user's first value
    returning = Seen("SE", 20 * day, now - 60_000, 2)
    assert new_values([gb, returning], lookback) == set()
    assert new_values([], lookback) == set()


class FlakyBulk:
    """Answers _bulk like a node whose write queue is full for the first item, once."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def request(self, method: str, path: str, body: Any = None, params: Any = None) -> dict[str, Any]:
        lines = body.splitlines()
        self.calls.append(len(lines) // 2)
        first = len(self.calls) == 1
        items = [{"index": {"_id": json.loads(lines[i])["index"]["_id"], "status": 429 if first and i == 0 else 201}}
                 for i in range(0, len(lines), 2)]
        return {"errors": first, "items": items}


def test_bulk_writer_retries_only_what_was_refused_with_429() -> None:
    fake = FlakyBulk()
    writer = BulkWriter(fake, "idx", flush_every=3, sleep=lambda _: None)  # type: ignore[arg-type]
    for i in range(3):
        writer.put(f"id{i}", {"n": i})
    assert fake.calls == [3, 1] and writer.written == 3


class RefusingBulk:
    """Answers _bulk like a node that refuses every document with HTTP 400."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def request(self, method: str, path: str, body: Any = None, params: Any = None) -> dict[str, Any]:
        self.threads.add(threading.current_thread().name)
        lines = body.splitlines()
        items = [{"index": {"_id": json.loads(lines[i])["index"]["_id"], "status": 400,
                            "error": {"reason": "mapper_parsing_exception"}}} for i in range(0, len(lines), 2)]
        return {"errors": True, "items": items}


def test_a_background_bulk_sends_from_its_thread_and_its_error_surfaces_in_the_job() -> None:
    fake = RefusingBulk()
    writer = BulkWriter(fake, "idx", flush_every=2, background=True)  # type: ignore[arg-type]
    writer.put("a", {"n": 1})
    writer.put("b", {"n": 2})  # handed to the sender thread
    with pytest.raises(PacsguardError, match="bulk index of a in idx failed .*mapper_parsing_exception"):
        writer.flush()
    assert fake.threads == {"pacsguard-bulk-idx"} and writer.written == 0


def test_long_profile_ids_are_hashed() -> None:
    assert profile_id("country", "alice", "GB") == "country:alice:GB"
    long_id = profile_id("recipient", "alice", "x" * 600 + "@example.org")
    assert long_id.startswith("recipient:sha256:") and len(long_id) < 100


def test_external_recipients_follow_the_pipeline_rule() -> None:
    internal = internal_set(["Hospital.example", "@clinic.example"])
    assert not is_external("Dr.Who@HOSPITAL.example", internal)
    assert not is_external("nurse@clinic.example", internal)
    assert is_external("someone@partner.example", internal)
    assert is_external("no-domain-id", internal)


def test_default_lookback_covers_two_intervals_and_the_escalation_window() -> None:
    settings = load_settings(environ={})
    assert default_lookback(settings, None) == 3600  # escalation_window 60m
    assert default_lookback(settings, 5 * 60) == 3600
    assert default_lookback(settings, 2 * 3600) == 4 * 3600
    quick = load_settings(environ={"PACSGUARD_THRESHOLDS__ESCALATION_WINDOW": "5m"})
    assert default_lookback(quick, None) == 15 * 60  # never under 15 minutes


def test_loop_survives_a_failed_run_and_stops_when_asked() -> None:
    stop = threading.Event()
    runs: list[float] = []

    def run() -> list[JobReport]:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise ConnectionProblem("cannot reach http://127.0.0.1:1: connection refused")
        if len(runs) == 3:
            stop.set()
        return []

    errors: list[str] = []
    assert loop(run, 0, stop, lambda _: None, errors.append) == 3
    assert errors == ["cannot reach http://127.0.0.1:1: connection refused"]


def test_loop_stopped_mid_run_ends_without_error() -> None:
    stop = threading.Event()

    def run() -> list[JobReport]:
        stop.set()
        raise JobStopped()

    assert loop(run, 3600, stop, lambda _: None, lambda _: None) == 0
