"""`pacsguard demo`: a simulated morning shipped live, and the alerts of the running `watch` as they arrive.

A week of normal history goes in first (so users have known devices and countries),
then a compressed morning: sign-ins, reading, a heavy radiologist, and one of each
fast attack (a login-failure burst, a password spray, a takeover, an admin grant, a
new-device login followed by a bulk export, a share-link spike), each event written
to a file at its own time and tailed by the collector, as a log shipper would.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from pacsguard.collector.sender import SenderConfig
from pacsguard.collector.service import CollectorConfig, CollectorThread
from pacsguard.core.connection import Cluster
from pacsguard.core.models import Progress
from pacsguard.core.settings import Settings, state_dir
from pacsguard.jobs import run_job
from pacsguard.services.alerts import AlertView, list_alerts
from pacsguard.services.simulate import (
    HOSPITAL_IPS,
    Simulation,
    User,
    Writer,
    make_users,
    normal_day,
    s_1a,
    s_1b,
    s_1c,
    s_3,
    s_4c,
    s_5a,
    ship,
    write,
)

LIVE = (s_1a, s_1b, s_1c, s_3, s_4c, s_5a)


def demo_dir(port: int) -> Path:
    """The demo's files (history, the live morning, the collector's state): in the state dir, never in the
    directory the demo was started from (a clone of the repository, often)."""
    return state_dir() / f"demo-{port}"


def morning(users: int, seed: int, now: dt.datetime, history_days: int = 7) -> tuple[Simulation, Simulation]:
    """(history before today, the live morning from now): both deterministic for a seed and a now."""
    rng = random.Random(seed)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    people = make_users(users, rng)
    history = Simulation(today, now, today - dt.timedelta(days=history_days), people)
    w = Writer(history, rng)
    for d in range(history_days):
        for user in people:
            normal_day(w, user, history.warmup_start + dt.timedelta(days=d), rng)
    live = Simulation(now, now + dt.timedelta(minutes=10), now, people)
    lw = Writer(live, rng)
    lw.seq = w.seq
    by_role: dict[str, list[User]] = {}
    for user in people:
        by_role.setdefault(user.role, []).append(user)
    for user in people[: min(len(people), 15)]:  # the morning's sign-ins
        lw.login(now + dt.timedelta(seconds=rng.randrange(0, 60)), user, rng.choice(HOSPITAL_IPS))
    # attacks, compressed: one every 20 seconds, the 4c chain's export two minutes after its login
    picks = {"clerk": by_role["clerk"][0], "tech": by_role["tech"][0], "rad": by_role["rad"][0],
             "adm": by_role["adm"][0]}
    for i, scenario in enumerate(LIVE):
        scenario(lw, now + dt.timedelta(seconds=20 * (i + 1)), picks)
    # squeeze each attack into a minute so the demo takes minutes, not hours
    squeezed = []
    for t, e in live.generic:
        t2 = now + (t - now) / 6
        e = dict(e, timestamp=t2.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        squeezed.append((t2, e))
    live.generic = sorted(squeezed, key=lambda x: x[0])
    kc = []
    for t, r in live.keycloak:
        t2 = now + (t - now) / 6
        kc.append((t2, dict(r, timestamp=t2.isoformat(timespec="microseconds"))))
    live.keycloak = sorted(kc, key=lambda x: x[0])
    live.end = max(t for t, _ in live.generic + live.keycloak)
    return history, live


def run_demo(cluster: Cluster, settings: Settings, out: Path, failures_key: bytes, say: Progress,
             show: Callable[[AlertView], None], users: int = 20, seed: int = 1, wait_seconds: float = 420) -> int:
    """Ship history, then the morning live; print alerts as they arrive; return how many arrived."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    history, live = morning(users, seed, now)
    meta = write(history, out / "history", seed)
    say(f"shipping a week of history ({meta['events']['generic'] + meta['events']['keycloak']} events)")
    ship(cluster, settings, out / "history", meta, failures_key)
    for job in ("baselines", "profiles"):  # what `watch` does every jobs_every, done now for the history
        run_job(cluster, settings, job)
    before = {a.id for a in list_alerts(cluster, settings)}
    (out / "live").mkdir(parents=True, exist_ok=True)
    viewer, keycloak = out / "live" / "viewer-audit.jsonl", out / "live" / "keycloak.log"
    viewer.write_text("")
    keycloak.write_text("")
    (out / "live" / "labels.jsonl").write_text("".join(json.dumps(lb.as_dict()) + "\n" for lb in live.labels))
    config = CollectorConfig(state_dir=out / "live" / "collector-state", files=((viewer, "json"), (keycloak, "keycloak")),
                             sender=SenderConfig(batch_size=200, flush_interval=0.2), progress_interval=0,
                             failures_key=failures_key)
    thread = CollectorThread(config, cluster, settings).start()
    queue = sorted([(t, viewer, e) for t, e in live.generic] + [(t, keycloak, r) for t, r in live.keycloak],
                   key=lambda x: x[0])
    say(f"the morning goes live: {len(queue)} events until {live.end.time().isoformat(timespec='seconds')} UTC; "
        f"attacks by {', '.join(sorted({lb.entity for lb in live.labels}))}")
    seen: set[str] = set(before)
    deadline = time.monotonic() + (live.end - now).total_seconds() + wait_seconds
    expected = {lb.signal for lb in live.labels if lb.kind == "attack"}
    arrived: set[str] = set()
    jobs_run = False
    try:
        while time.monotonic() < deadline:
            wall = dt.datetime.now(dt.timezone.utc)
            while queue and queue[0][0] <= wall:
                _, path, record = queue.pop(0)
                with path.open("a") as fh:
                    fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            if not queue and not jobs_run and wall > live.end + dt.timedelta(seconds=20):
                # the new-device marker of the 4c chain comes from the profiles job (watch runs it every
                # jobs_every); run it once now so the demo does not wait for the next round
                run_job(cluster, settings, "profiles")
                jobs_run = True
            for alert in sorted(list_alerts(cluster, settings), key=lambda a: a.start_time):
                if alert.id not in seen:
                    seen.add(alert.id)
                    arrived.add(alert.signal)
                    show(alert)
            # an escalated export is a critical 4a alert of the engine
            if not queue and jobs_run and expected - {"4c"} <= arrived:
                break
            time.sleep(2)
    finally:
        thread.stop()
    return len(seen - before)


def failures_key_for_demo() -> bytes:
    from pacsguard.collector.failures import resolve_failures_key

    try:
        return resolve_failures_key(create=True)
    except OSError:
        return os.urandom(32)

