"""Benchmark of the baselines and profiles jobs, and of every monitor, at 10^3, 10^4 and 10^5 users
(a script, not a test).

For each scale it installs an isolated pack (prefix pgbench, namespace
bench<users>), loads 30 days of history, runs each job in a fresh child
process and prints its time and memory, then removes everything it created.

The history is bulk-loaded already normalized (pipeline=_none) into the pack's
own data stream: the ingest pipeline is not what is measured, and on a 2-core
machine it would take longer than the jobs. Per user: 3 exports, 4 successful
logins (one device, one country; 1 in 10 users also from a second country and
device), and 1 in 5 users a share with 1-2 external recipients. Each event
carries event.ingested as the pipeline sets it: the history arrived as it
happened, the recent events when they are loaded.

Each job runs twice: a first run over the history (for profiles a full one: no
checkpoint yet), then, once the recent events (the `--active` share of the
users) are loaded, the run that follows it (profiles: incremental). Each line
says whether the run meets the goal of issue 22 (< 30 s at 10^5 users).

Memory is measured twice per job, each in its own child so one run cannot
inflate the next: a plain run (wall time, and ru_maxrss of the child before
and after the job) and a run under tracemalloc (peak of Python allocations
during the job). Flat memory shows as a peak that does not grow with users.

    python benchmarks/detect.py                     # 1000 10000 100000
    python benchmarks/detect.py --users 1000 10000  # a subset
    python benchmarks/detect.py --url http://127.0.0.1:9200
    python benchmarks/detect.py --users 100000 --active 0.01 --no-trace   # a rule run at 10^5 users, 1 % active
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

from machine import load_average, machine_facts
from pacsguard.core.connection import Cluster
from pacsguard.core.content import content_path
from pacsguard.core.settings import Settings, load_settings
from pacsguard.engines import run_monitor
from pacsguard.jobs import run_job
from pacsguard.rules.compiler import render_monitor
from pacsguard.rules.model import load_rules
from pacsguard.services.install import install, uninstall
from pacsguard.services.watch import Watcher

DAYS = 30
# (ip, country, region) as the GeoLite2 test databases resolve them
PLACES = [("81.2.69.142", "GB", "GB-OXF"), ("216.160.83.56", "US", "US-ID"),
          ("89.160.20.112", "SE", "SE-AB"), ("175.16.199.1", "CN", "CN-JL")]
CHUNK = 5000
GOAL_SECONDS = 30  # issue 22: baselines and profiles at 10^5 users, each


def bench_settings(url: str, users: int) -> Settings:
    return load_settings(overrides={"cluster": {"url": url}, "id_prefix": "pgbench", "namespace": f"bench{users}",
                                    "pseudonymization": {"salt": "benchmark-salt-0123456789"}}, environ={})


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def history(users: int, now: dt.datetime, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Normalized events as the pipeline would have written them, spread over 30 days."""
    rng = random.Random(seed)
    span = DAYS * 86400 - 7200  # keep clear of the hour the baseline excludes

    def when() -> str:
        return iso(now - dt.timedelta(seconds=7200 + rng.randrange(span)))

    for i in range(users):
        user = f"user{i:06d}"
        base = {"event": {"dataset": "pacs.audit", "outcome": "success"}, "user": {"name": user}}
        home = PLACES[i % 2]
        away = PLACES[2 + i % 2]
        for _ in range(3):
            yield {**base, "@timestamp": when(), "event": {**base["event"], "action": "study-export"},
                   "pacs": {"study": {"count": rng.randint(1, 3)}}}
        for n in range(4):
            ip, country, region = away if (i % 10 == 0 and n == 3) else home
            yield {**base, "@timestamp": when(), "event": {**base["event"], "action": "user-login"},
                   "source": {"ip": ip, "geo": {"country_iso_code": country, "region_iso_code": region}},
                   "device": {"id": f"dev{i:06d}{'b' if country == away[1] else 'a'}"}}
        if i % 5 == 0:
            recipients = [f"r{i}-{k}@partner{k}.example" for k in range(1 + i % 2)]
            yield {**base, "@timestamp": when(), "event": {**base["event"], "action": "share-create"},
                   "pacs": {"share": {"id": f"lnk{i}", "recipients": recipients, "external": True}}}


def recent(users: int, now: dt.datetime, seed: int = 11, active: float = 1.0) -> Iterator[dict[str, Any]]:
    """The last minutes, which the monitors read: every active user (a share `active` of them)
    logs in once; one in ten of those also fails three times first, exports two studies and
    shares one link."""
    rng = random.Random(seed)
    step = max(1, round(1 / active))
    for i in range(0, users, step):
        user = f"user{i:06d}"
        ip = PLACES[i % 2][0]
        base = {"user": {"name": user}, "source": {"ip": ip}}

        def at(max_s: int) -> str:
            return iso(now - dt.timedelta(seconds=rng.randrange(30, max_s)))

        yield {**base, "@timestamp": at(540), "event": {"dataset": "pacs.audit", "action": "user-login",
                                                        "outcome": "success"}}
        if (i // step) % 10:
            continue
        for _ in range(3):
            yield {**base, "@timestamp": at(540), "event": {"dataset": "pacs.audit", "action": "user-login",
                                                            "outcome": "failure"}}
        for k in range(2):
            yield {**base, "@timestamp": at(1700), "event": {"dataset": "pacs.audit", "action": "study-export",
                                                             "outcome": "success"},
                   "pacs": {"study": {"uids": [f"2.25.{i}.{k}"], "count": 1}}}
        yield {**base, "@timestamp": at(1700), "event": {"dataset": "pacs.audit", "action": "share-create",
                                                         "outcome": "success"},
               "pacs": {"share": {"id": f"now{i}", "recipients": [f"x{i}@ext.example"], "external": True}}}


def load(cluster: Cluster, settings: Settings, users: int, now: dt.datetime,
         source: Any = history, live: bool = False) -> int:
    """Bulk-load the events of `source`; event.ingested is the event's own time (the history
    arrived as it happened) or, live, the time of loading."""
    stream = settings.index("events_data_stream")
    sent = 0
    lines: list[str] = []
    for doc in source(users, now):
        arrived = iso(dt.datetime.now(dt.timezone.utc)) if live else doc["@timestamp"]
        doc = {**doc, "event": {**doc["event"], "ingested": arrived}}
        lines.append('{"create":{}}\n' + json.dumps(doc) + "\n")
        if len(lines) == CHUNK:
            sent += _bulk(cluster, stream, lines)
            lines = []
    if lines:
        sent += _bulk(cluster, stream, lines)
    cluster.request("POST", f"/{stream}/_refresh")
    return sent


def _bulk(cluster: Cluster, stream: str, lines: list[str]) -> int:
    res = cluster.request("POST", f"/{stream}/_bulk", body="".join(lines), params={"pipeline": "_none"})
    if res.get("errors"):
        bad = next(item["create"] for item in res["items"] if "error" in item["create"])
        raise SystemExit(f"bulk load failed: {bad['error']}")
    return len(lines)


def child(args: argparse.Namespace) -> None:
    """One job run in this process; prints one JSON line."""
    settings = bench_settings(args.url, args.users_one)
    cluster = Cluster.connect(settings.cluster)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.trace:
        tracemalloc.start()
    began = time.monotonic()
    report = run_job(cluster, settings, args.child, **({"full": True} if args.full else {}))
    seconds = time.monotonic() - began
    peak = tracemalloc.get_traced_memory()[1] if args.trace else None
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "tracemalloc_peak": peak, "rss_before_kb": rss_before,
                      "rss_after_kb": rss_after, "report": report.as_dict()}))


def run_child(url: str, users: int, job: str, trace: bool, full: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--url", url, "--child", job, "--users-one", str(users)]
    if trace:
        cmd.append("--trace")
    if full:
        cmd.append("--full")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def job_runs(url: str, users: int, events: int, trace: bool, run: str) -> list[dict[str, Any]]:
    """One run of each job, timed; then, traced, a run of the same kind (full after a first run)."""
    rows = []
    for job in ("baselines", "profiles"):
        plain = run_child(url, users, job, trace=False)
        traced = run_child(url, users, job, trace=True, full=run == "first") if trace \
            else {"tracemalloc_peak": float("nan")}
        rep = plain["report"]
        rows.append({"users": users, "events": events, "job": job, "run": f"{run} ({rep.get('mode', 'full')})",
                     "seconds": plain["seconds"], "pages": rep["pages"], "written": rep["written"],
                     "deleted": rep["deleted"], "tracemalloc_peak_mb": traced["tracemalloc_peak"] / 2**20,
                     "rss_delta_mb": (plain["rss_after_kb"] - plain["rss_before_kb"]) / 1024,
                     "rss_max_mb": plain["rss_after_kb"] / 1024})
        print(f"  {users} users: {job} ({run}) done in {plain['seconds']:.1f}s", flush=True)
    return rows


def bench(url: str, users: int, active: float = 1.0, trace: bool = True) -> list[dict[str, Any]]:
    settings = bench_settings(url, users)
    cluster = Cluster.connect(settings.cluster)
    uninstall(cluster, settings, purge=True)  # leftovers of an interrupted run
    # Without Alerting the monitors are left out; the jobs do not need them and
    # the monitor timings then come from the core-search engine.
    install(cluster, settings, allow_missing_plugins=True)
    rows = []
    try:
        began = time.monotonic()
        events = load(cluster, settings, users, dt.datetime.now(dt.timezone.utc))
        print(f"  {users} users: loaded {events} events in {time.monotonic() - began:.1f}s", flush=True)
        rows += job_runs(url, users, events, trace, "first")
        now = dt.datetime.now(dt.timezone.utc)
        load(cluster, settings, users, now, source=lambda n, at: recent(n, at, active=active), live=True)
        rows += job_runs(url, users, events, trace, f"next, {active:.0%} active")
        for rule in load_rules(content_path("detections")):
            best = min((run_monitor(cluster, render_monitor(rule, settings), period_end=now) for _ in range(3)),
                       key=lambda run: run.took_ms)
            rows.append({"users": users, "events": events, "job": f"monitor {rule.signal}", "seconds": best.took_ms / 1000,
                         "engine": best.engine, "fired": len(best.fired())})
        # the live run as `watch` makes it (a rule whose query joins every user's state is narrowed
        # to the users active in its window: services/watch.py live_run), timed with its lookups
        watcher = Watcher(cluster, settings, run_jobs=False)
        for state in watcher.rules if hasattr(watcher, "live_run") else []:
            timed = []
            for _ in range(3):
                began = time.monotonic()
                fired = len(watcher.live_run(state, now).fired())
                timed.append(time.monotonic() - began)
            rows.append({"users": users, "events": events, "job": f"watch {state.compiled.signal}",
                         "seconds": min(timed), "engine": "watch live run", "fired": fired})
        watcher.close()
    finally:
        uninstall(cluster, settings, purge=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("PACSGUARD_TEST_URL", "http://127.0.0.1:9200"))
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--active", type=float, default=1.0,
                        help="share of the users with events in the monitors' windows (0.01: 1 %%)")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs of the jobs")
    parser.add_argument("--child", choices=["baselines", "profiles"], help=argparse.SUPPRESS)
    parser.add_argument("--users-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    for line in machine_facts(Cluster.connect(bench_settings(args.url, 0).cluster)):
        print(line, flush=True)
    print(f"active in the monitors' windows: {args.active:.0%} of the users")
    rows = [row for users in args.users for row in bench(args.url, users, args.active, not args.no_trace)]
    header = f"{'users':>7} {'events':>8} {'job':<9} {'run':<32} {'seconds':>8} {'goal <30s':>9} {'pages':>6} " \
             f"{'written':>8} {'deleted':>7} {'tracemalloc peak':>16} {'rss delta':>9} {'rss max':>8}"
    print(header)
    print("-" * len(header))
    for r in (r for r in rows if "pages" in r):
        goal = ("met" if r["seconds"] < GOAL_SECONDS else "MISSED") if r["users"] >= 100_000 else "-"
        print(f"{r['users']:>7} {r['events']:>8} {r['job']:<9} {r['run']:<32} {r['seconds']:>8.1f} {goal:>9} "
              f"{r['pages']:>6} {r['written']:>8} {r['deleted']:>7} {r['tracemalloc_peak_mb']:>13.2f} MB "
              f"{r['rss_delta_mb']:>6.1f} MB {r['rss_max_mb']:>5.0f} MB")
    print(f"(goal: each job < {GOAL_SECONDS} s at 10^5 users, issue 22; the next run follows the first, "
          "after the recent events)")
    print()
    print("monitor run time (best of 3; engine: alerting-dryrun where the cluster has Alerting, else core-search)")
    print(f"after the runs: {load_average()}")
    print(f"{'users':>7} {'monitor':<11} {'ms':>8} {'entities fired':>15} engine")
    for r in (r for r in rows if "engine" in r):
        print(f"{r['users']:>7} {r['job']:<11} {r['seconds'] * 1000:>8.0f} {r['fired']:>15} {r['engine']}")


if __name__ == "__main__":
    main()
