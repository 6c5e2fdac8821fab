"""What a job run did, for the CLI, logs and tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any


class JobStopped(Exception):
    """A stop was requested (SIGTERM / Ctrl-C in the loop) between two pages.

    Not an error: the run ends before its stale sweep, so the index keeps the
    previous run's documents for whatever this run did not reach, and the next
    run converges.
    """


@dataclass
class JobReport:
    job: str
    run_id: str
    started_at: str
    # Users seen per series (metric or profile kind): a user appears once per series it has data in.
    users: dict[str, int] = field(default_factory=dict)
    written: int = 0
    deleted: int = 0
    pages: int = 0
    markers: int = 0  # profiles only: values flagged profile.new
    # profiles: full (every user), incremental (the users whose profiles changed), users (given ones)
    mode: str = "full"
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        users = " ".join(f"{name}={n}" for name, n in self.users.items()) or "none"
        markers = {"profiles": f", {self.markers} new-value marker(s)",
                   "directory": f", {self.markers} admin-event actor(s) named"}.get(self.job, "")
        mode = "" if self.mode == "full" else f" ({self.mode})"
        return (f"{self.job}{mode}: users {users}; {self.written} doc(s) written, {self.deleted} stale deleted"
                f"{markers}; {self.pages} page(s) in {self.seconds:.1f}s")


def iso_ms(epoch_ms: float) -> str:
    """Epoch milliseconds as the ISO-8601 UTC text the indices store."""
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
