"""Running the jobs once or on an interval, and stopping cleanly.

The loop never overlaps itself (the next run starts after the previous one
ended), which the stale sweep relies on: two concurrent runs of one job would
each delete the other's documents. Under cron or a Kubernetes CronJob, forbid
concurrency there (e.g. concurrencyPolicy: Forbid).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from types import FrameType

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings
from pacsguard.jobs import run_job
from pacsguard.jobs.report import JobReport, JobStopped


class JobName(str, Enum):
    baselines = "baselines"
    profiles = "profiles"
    directory = "directory"
    all = "all"


def run_once(cluster: Cluster, settings: Settings, job: JobName, *, lookback_seconds: int | None,
             page_size: int, stop: threading.Event | None = None, full: bool = False) -> list[JobReport]:
    names = all_jobs(settings) if job == JobName.all else [job.value]
    return [run_job(cluster, settings, name, lookback_seconds=lookback_seconds, page_size=page_size, stop=stop,
                    full=full) for name in names]


def all_jobs(settings: Settings) -> list[str]:
    """The jobs `all` (and watch) run: the directory only where it has a source."""
    from pacsguard.jobs.directory import directory_configured

    # directory first: the rules and the profiles then see resolved actor names
    return (["directory"] if directory_configured(settings) else []) + ["baselines", "profiles"]


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM / SIGINT set the returned event; a second one interrupts at once.

    The first signal lets the current page finish and skips the rest of the run
    (nothing half-written matters: the next run rewrites every document), so a
    service manager's stop is quick and leaves no error behind.
    """
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def loop(run: Callable[[], list[JobReport]], every_seconds: int, stop: threading.Event,
         on_reports: Callable[[list[JobReport]], None], on_error: Callable[[str], None]) -> int:
    """Run, sleep out the rest of the interval, repeat until stopped. Returns the number of runs."""
    runs = 0
    while not stop.is_set():
        began = time.monotonic()
        try:
            on_reports(run())
        except JobStopped:
            break
        except PacsguardError as exc:
            # A scheduler outlives a cluster restart: report and try again next tick.
            on_error(str(exc))
        runs += 1
        stop.wait(max(0.0, every_seconds - (time.monotonic() - began)))
    return runs
