"""Which past periods a rule must evaluate again, and for whom: late events and downtime.

A windowed rule counts events by their own time in [period_end - window, period_end]. An event
that arrives after the periods whose windows hold it were evaluated (a late event, or one that
arrived while no engine ran) was never counted in them. The engine asks which entities have
such events and in which cells of a grid of the rule's step their times lie
(engines/core.py `arrivals`); every window that holds one of them ends at a grid point from the
end of its cell to one window later. Those period ends, oldest first, each with the entities
whose late events its window holds, are the runs to make: the same monitor, at that period
end, narrowed to those entities. A grid of the rule's own schedule is the resolution the live
engine has, so a late burst is judged as it would have been on time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pacsguard.engines.core import Arrival


@dataclass
class Period:
    end: dt.datetime
    # entity -> the latest late event time its window holds (the alert's event time)
    entities: dict[str, dt.datetime] = field(default_factory=dict)


def plan(arrivals: list[Arrival], step_seconds: int, window_seconds: int, until: dt.datetime,
         after: dt.datetime | None = None) -> list[Period]:
    """Period ends (grid points, <= until, > after) to evaluate, oldest first, with their entities."""
    step = dt.timedelta(seconds=step_seconds)
    reach = dt.timedelta(seconds=window_seconds)
    periods: dict[dt.datetime, Period] = {}
    for a in arrivals:
        end = a.cell + step
        while end <= until and end - a.cell <= reach + step:
            if after is None or end > after:
                period = periods.setdefault(end, Period(end))
                seen = period.entities.get(a.entity)
                period.entities[a.entity] = a.last if seen is None else max(seen, a.last)
            end += step
    return [periods[k] for k in sorted(periods)]
