"""Run identity and time anchors shared by the jobs."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from pacsguard.jobs.report import iso_ms

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class RunClock:
    run_id: str
    now_ms: int

    @property
    def now_iso(self) -> str:
        return iso_ms(self.now_ms)


def start_run(now: dt.datetime | None = None) -> RunClock:
    """A new run id and its 'now' to the millisecond (the events' precision).

    Truncating to the second would leave out the events of the current second until the next
    run: a login indexed 200 ms before the profiles job ran would not be in its profile."""
    moment = now or dt.datetime.now(dt.timezone.utc)
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return RunClock(run_id=uuid.uuid4().hex[:16], now_ms=(moment - EPOCH) // dt.timedelta(milliseconds=1))
