"""Delivery lanes (engines/delivery.py): a channel whose sends hang holds back only itself."""

from __future__ import annotations

import threading
import time

from pacsguard.engines.delivery import Lanes


def test_a_hung_lane_holds_back_only_its_own_channel() -> None:
    lanes, release = Lanes(), threading.Event()
    try:
        hung = [lanes.submit("stuck", release.wait, 30) for _ in range(Lanes.LANE_WORKERS + 3)]
        started = time.monotonic()
        done = [lanes.submit("soc", time.monotonic) for _ in range(10)]
        finished = [f.result(timeout=5) for f in done]
        assert max(finished) - started < 1.0
        assert not any(f.done() for f in hung)
    finally:
        release.set()
        lanes.shutdown()
    assert all(f.result() for f in hung)
