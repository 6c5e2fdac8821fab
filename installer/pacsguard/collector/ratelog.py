"""Log lines for per-event problems, at most one per kind every few seconds.

A device that sends garbage 1000 times a second must not turn the collector's
log into its own flood; the counters carry the totals.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = 5.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        hidden = self._suppressed.pop(kind, 0)
        if hidden:
            message += f" (and {hidden} more like it since the last such line)"
        self.logger.warning(message, *args)
