"""Scheduled jobs that keep the reference indices the detection rules read (docs/design.md).

- baselines: per-user export/share statistics and a threshold (signals 4b, 5b);
- profiles: per-user known countries, regions, devices and external recipients,
  with markers for values first seen in the job's lookback (signals 2a, 2b, 4c, 5b);
- directory: accounts, roles and admin flag from the identity provider and/or a CSV (4a).

Both page through the events with composite aggregations and stream the pages,
so memory stays flat in the number of users; profiles runs are incremental between
full ones (docs/baselines.md).
"""

from __future__ import annotations

import datetime as dt
import threading

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings
from pacsguard.jobs.baselines import run_baselines
from pacsguard.jobs.composite import MAX_PAGE_SIZE
from pacsguard.jobs.directory import run_directory
from pacsguard.jobs.profiles import run_profiles
from pacsguard.jobs.report import JobReport, JobStopped

__all__ = ["JobReport", "JobStopped", "run_baselines", "run_directory", "run_job", "run_profiles"]


def run_job(cluster: Cluster, settings: Settings, job: str, *, now: dt.datetime | None = None,
            lookback_seconds: int | None = None, page_size: int = MAX_PAGE_SIZE,
            stop: threading.Event | None = None, full: bool = False) -> JobReport:
    """One run of one job by name ("baselines", "profiles" or "directory"); full: a full profiles run
    even where an incremental one would do."""
    if job == "baselines":
        return run_baselines(cluster, settings, now=now, page_size=page_size, stop=stop)
    if job == "profiles":
        return run_profiles(cluster, settings, now=now, lookback_seconds=lookback_seconds,
                            page_size=page_size, stop=stop, full=full)
    if job == "directory":
        return run_directory(cluster, settings, now=now)
    raise PacsguardError(f"unknown job {job!r}: use baselines, profiles or directory")
