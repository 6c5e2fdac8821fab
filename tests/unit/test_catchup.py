"""Which past periods the engine evaluates again for late events, and entity values the alerts
index can hold (pure code: engines/catchup.py, engines/entity.py)."""

from __future__ import annotations

import datetime as dt

from pacsguard.engines.catchup import plan
from pacsguard.engines.core import Arrival
from pacsguard.engines.entity import bounded, is_bounded

T = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone.utc)
MIN = dt.timedelta(minutes=1)


def test_a_late_cell_is_evaluated_at_every_period_end_whose_window_holds_it() -> None:
    arrivals = [Arrival("ann", T, T + dt.timedelta(seconds=50), 9)]
    periods = plan(arrivals, 60, 600, until=T + dt.timedelta(hours=1))
    # from the end of its cell to one window later, oldest first
    assert [p.end for p in periods] == [T + MIN * k for k in range(1, 12)]
    assert all(p.entities == {"ann": T + dt.timedelta(seconds=50)} for p in periods)


def test_entities_share_the_period_ends_their_windows_have_in_common() -> None:
    arrivals = [Arrival("ann", T, T + dt.timedelta(seconds=5), 1),
                Arrival("bob", T + 5 * MIN, T + 5 * MIN + dt.timedelta(seconds=1), 2)]
    periods = {p.end: set(p.entities) for p in plan(arrivals, 60, 600, until=T + dt.timedelta(hours=1))}
    assert periods[T + MIN] == {"ann"}
    assert periods[T + 6 * MIN] == {"ann", "bob"}
    assert periods[T + 16 * MIN] == {"bob"}
    assert len(periods) == 16


def test_periods_stop_at_the_live_run_and_resume_after_what_was_done() -> None:
    arrivals = [Arrival("ann", T, T + dt.timedelta(seconds=50), 9)]
    assert [p.end for p in plan(arrivals, 60, 600, until=T + 3 * MIN)] == [T + MIN, T + 2 * MIN, T + 3 * MIN]
    assert [p.end for p in plan(arrivals, 60, 600, until=T + 3 * MIN, after=T + 2 * MIN)] == [T + 3 * MIN]


def test_two_cells_of_one_entity_keep_the_latest_late_time_per_period() -> None:
    arrivals = [Arrival("ann", T, T + dt.timedelta(seconds=10), 4), Arrival("ann", T + MIN, T + MIN * 1.5, 5)]
    periods = {p.end: p.entities["ann"] for p in plan(arrivals, 60, 600, until=T + dt.timedelta(hours=1))}
    assert periods[T + MIN] == T + dt.timedelta(seconds=10)
    assert periods[T + 2 * MIN] == T + MIN * 1.5


def test_short_values_are_kept_and_long_ones_cut_with_a_hash() -> None:
    assert bounded("jdoe") == "jdoe" and not is_bounded("jdoe")
    long_a, long_b = "a" * 7240 + "é" * 12760, "a" * 7240 + "é" * 12759 + "e"
    for value in (long_a, long_b, "é" * 600):
        cut = bounded(value)
        assert is_bounded(value) and len(cut) < 200 and len(cut.encode()) < 1024
        assert cut.startswith(value[:120]) and "…sha256:" in cut
        assert bounded(cut) == cut
    assert bounded(long_a) != bounded(long_b)  # same prefix, different values: different entities
