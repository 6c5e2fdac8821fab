"""Ingest throughput: the full pipeline vs a plain bulk of the same normalized documents.

    python benchmarks/ingest.py --url http://127.0.0.1:9200 --events 20000 --rounds 3

What it does:
1. installs an isolated pack (own id_prefix and namespace) on --url;
2. generates N realistic events: generic JSON (logins, shares, exports, role
   changes), Keycloak event lines, and ATNA audit messages (the dcm4chee samples
   with fresh timestamps) turned into the collector's envelope;
3. per round, measures
   a. full pipeline: the collector's sender bulk-creates {"message": raw} into
      the data stream (router -> source pipeline -> enrich) until every event
      is settled;
   b. plain bulk: the documents the pipeline produced (read back once) are
      bulk-created into a plain index with the same mappings and no pipeline,
      same batch size, same number of requests in flight;
4. prints both rates, the ratio (target >= 70%) and the machine facts;
5. removes everything it created.

Not a test: numbers depend on the machine; run it on the hardware you size.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from machine import machine_facts
from pacsguard.collector import CollectorConfig, CollectorThread
from pacsguard.collector.events import Event, make_id
from pacsguard.collector.sender import SenderConfig
from pacsguard.collector.syslog_input import convert_frame
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings, load_settings
from pacsguard.services.install import install, uninstall

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "samples" / "dicom-audit"
USERS = [f"{first}.{last}" for first in ("anna", "ben", "chloe", "david", "emma", "felix", "grace", "hugo")
         for last in ("martin", "bernard", "dubois", "thomas", "robert", "richard")]
IPS = ["81.2.69.142", "81.2.69.160", "89.160.20.112", "175.16.199.3", "216.160.83.56", "2.125.160.216",
       "10.12.0.5", "10.12.0.17", "192.168.40.23", "67.43.156.1"]
AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
          "OsiriX/13.0 CFNetwork/1494.0.7 Darwin/23.4.0"]


# ------------------------------------------------------------------ events


def when(rng: random.Random) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=rng.randint(60, 86_400))


def generic_event(rng: random.Random, n: int) -> str:
    user = rng.choice(USERS)
    base: dict[str, Any] = {"timestamp": when(rng).isoformat(timespec="milliseconds"), "app": "cloudpacs",
                            "vendor": "Example Imaging", "host": "pacs-web-01", "id": f"bench-{n}", "user": user,
                            "user_id": f"u-{USERS.index(user)}", "roles": ["radiologist"], "realm": "hospital",
                            "source_ip": rng.choice(IPS), "user_agent": rng.choice(AGENTS),
                            "session_id": uuid.UUID(int=rng.getrandbits(128)).hex}
    kind = rng.random()
    studies = [f"1.2.840.113619.2.{rng.randint(1, 10**6)}.{rng.randint(1, 10**6)}" for _ in range(rng.randint(1, 6))]
    if kind < 0.45:
        failed = rng.random() < 0.2
        base.update(action="user-login", outcome="failure" if failed else "success",
                    **({"reason": "invalid_password"} if failed else {}))
    elif kind < 0.7:
        base.update(action="study-view", studies=studies[:1], patient_id=f"PAT{rng.randint(1, 10**6):07d}")
    elif kind < 0.85:
        base.update(action="study-export", studies=studies, instances=rng.randint(10, 3000),
                    export={"destination": rng.choice(["AE_REMOTE", "usb", "cloud-bucket"])})
    elif kind < 0.95:
        base.update(action="share-create", studies=studies[:2], share={
            "id": f"sh-{n}", "recipients": [f"dr{rng.randint(1, 50)}@{rng.choice(['hospital.example', 'gmail.com'])}"],
            "expires_at": (datetime.now(timezone.utc) + timedelta(days=7)).isoformat(timespec="seconds"),
            "max_uses": 5})
    else:
        base.update(action="role-grant", target_user=rng.choice(USERS), roles_changed=["pacs-admin"])
    return json.dumps(base)


def keycloak_line(rng: random.Random) -> str:
    stamp = when(rng).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    user = rng.choice(USERS)
    uid = uuid.UUID(int=rng.getrandbits(128))
    realm = "3f6d2c1e-9a41-4a52-8c1e-2b7f0f7e9a10"
    if rng.random() < 0.85:
        kind = rng.choice(["LOGIN", "LOGIN", "LOGIN_ERROR", "LOGOUT"])
        error = ', error="invalid_user_credentials"' if kind == "LOGIN_ERROR" else ""
        level = "WARN " if kind == "LOGIN_ERROR" else "INFO "
        return (f'{stamp} {level} [org.keycloak.events] (executor-thread-{rng.randint(1, 200)}) type="{kind}", '
                f'realmId="{realm}", realmName="hospital", clientId="pacs-web", userId="{uid}", '
                f'sessionId="{uuid.UUID(int=rng.getrandbits(128))}", ipAddress="{rng.choice(IPS)}"{error}, '
                f'auth_method="openid-connect", username="{user}"')
    return (f'{stamp} INFO  [org.keycloak.events] (executor-thread-{rng.randint(1, 200)}) operationType="CREATE", '
            f'realmId="{realm}", realmName="hospital", clientId="admin-cli", userId="{uid}", '
            f'ipAddress="{rng.choice(IPS)}", resourceType="REALM_ROLE_MAPPING", '
            f'resourcePath="users/{uuid.UUID(int=rng.getrandbits(128))}/role-mappings/realm"')


def atna_templates() -> list[bytes]:
    if not SAMPLES.is_dir():
        return []
    return [p.read_bytes() for p in sorted(SAMPLES.glob("dcm4chee-arc-cs-*.xml"))]


def atna_event(rng: random.Random, templates: list[bytes]) -> str:
    xml = rng.choice(templates)
    stamp = when(rng).isoformat(timespec="milliseconds")
    start = xml.find(b'EventDateTime="')
    if start >= 0:
        end = xml.find(b'"', start + 15)
        xml = xml[:start + 15] + stamp.encode() + xml[end:]
    frame = f"<85>1 {stamp} pacs01 dcm4chee-arc 4711 IHE+RFC-3881 - ".encode() + b"\xef\xbb\xbf" + xml
    return convert_frame(frame, 1 << 20, strict=True).message


def generate(count: int, seed: int = 7) -> tuple[list[str], list[str], dict[str, int], float]:
    """(messages, their formats, mix, ATNA conversion rate in events/s on this machine)."""
    rng = random.Random(seed)
    templates = atna_templates()
    messages: list[str] = []
    kinds: list[str] = []
    mix = {"generic": 0, "keycloak": 0, "atna": 0}
    atna_seconds = 0.0
    for n in range(count):
        roll = rng.random()
        if roll < 0.3 and templates:
            started = time.perf_counter()
            messages.append(atna_event(rng, templates))
            atna_seconds += time.perf_counter() - started
            mix["atna"] += 1
            kinds.append("atna")
        elif roll < 0.6:
            messages.append(keycloak_line(rng))
            mix["keycloak"] += 1
            kinds.append("keycloak")
        else:
            messages.append(generic_event(rng, n))
            mix["generic"] += 1
            kinds.append("generic")
    return messages, kinds, mix, (mix["atna"] / atna_seconds if atna_seconds else 0.0)


# ------------------------------------------------------------------ runs


def run_pipeline(cluster: Cluster, settings: Settings, messages: list[str], round_no: int, batch: int,
                 workers: int, state: Path) -> tuple[float, dict[str, Any]]:
    """Seconds to settle every event through the collector's sender into the data stream."""
    config = CollectorConfig(state_dir=state / f"round{round_no}", progress_interval=0,
                             sender=SenderConfig(batch_size=batch, workers=workers, flush_interval=0.05,
                                                 retry_budget=30))
    thread = CollectorThread(config, cluster, settings).start()
    sender = thread.collector.sender
    assert sender is not None
    events = [Event(make_id("bench", round_no, n), m, "bench") for n, m in enumerate(messages)]

    async def submit_all() -> None:
        for event in events:
            await sender.submit(event)

    started = time.perf_counter()
    thread.call(submit_all)
    while True:
        snap = thread.counters.snapshot()
        if snap["in_flight"] == 0:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    return elapsed, thread.stop()


def normalized_docs(cluster: Cluster, stream: str) -> list[dict[str, Any]]:
    cluster.request("POST", f"/{stream}/_refresh")
    docs: list[dict[str, Any]] = []
    page = cluster.request("POST", f"/{stream}/_search", params={"scroll": "2m"}, body={"size": 2000, "sort": ["_doc"]})
    while page["hits"]["hits"]:
        docs += [h["_source"] for h in page["hits"]["hits"]]
        page = cluster.request("POST", "/_search/scroll", body={"scroll": "2m", "scroll_id": page["_scroll_id"]})
    cluster.request("DELETE", "/_search/scroll", body={"scroll_id": page["_scroll_id"]}, ok_missing=True)
    return docs


def make_plain_index(cluster: Cluster, stream: str, plain: str) -> None:
    """Same mappings as the data stream's backing index, no pipeline, same shard/refresh settings."""
    mappings = next(iter(cluster.request("GET", f"/{stream}/_mapping").values()))["mappings"]
    mappings.pop("_data_stream_timestamp", None)
    cluster.request("PUT", f"/{plain}", body={
        "settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1", "refresh_interval": "1s",
                               "mapping": {"total_fields": {"limit": 2000}}}},
        "mappings": mappings})


def run_plain(cluster: Cluster, plain: str, docs: list[dict[str, Any]], round_no: int, batch: int,
              workers: int) -> float:
    """Seconds to bulk-create the normalized docs, `workers` requests in flight."""
    lines = [f'{{"create":{{"_id":"{make_id("plain", round_no, n)}"}}}}\n{json.dumps(d, ensure_ascii=False)}\n'
             for n, d in enumerate(docs)]
    bodies = ["".join(lines[i:i + batch]) for i in range(0, len(lines), batch)]

    def send(body: str) -> int:
        response = cluster.request("POST", f"/{plain}/_bulk", body=body)
        bad = [i for i in response["items"] if i["create"].get("status") not in (200, 201)]
        if bad:
            raise RuntimeError(f"plain bulk item failed: {bad[0]}")
        return len(response["items"])

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(send, bodies))
    elapsed = time.perf_counter() - started
    assert total == len(docs)
    return elapsed


def run_direct(cluster: Cluster, stream: str, messages: list[str], round_no: int, batch: int, workers: int) -> float:
    """Control: the same raw messages bulk-created into the data stream without the collector."""
    docs = [{"message": m} for m in messages]
    lines = [f'{{"create":{{"_id":"{make_id("direct", round_no, n)}"}}}}\n{json.dumps(d, ensure_ascii=False)}\n'
             for n, d in enumerate(docs)]
    bodies = ["".join(lines[i:i + batch]) for i in range(0, len(lines), batch)]

    def send(body: str) -> int:
        return len(cluster.request("POST", f"/{stream}/_bulk", body=body)["items"])

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(send, bodies))
    assert total == len(docs)
    return time.perf_counter() - started


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:9200")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="bulk requests in flight (both runs)")
    args = parser.parse_args(argv)

    tag = uuid.uuid4().hex[:6]
    settings = load_settings(overrides={"cluster": {"url": args.url}, "id_prefix": f"pgbench{tag}",
                                        "namespace": f"bench{tag}",
                                        "pseudonymization": {"salt": "benchmark-salt-0123456789"}}, environ={})
    cluster = Cluster.connect(settings.cluster)
    for line in machine_facts(cluster):
        print(line)
    messages, kinds, mix, atna_rate = generate(args.events)
    print(f"events: {len(messages)} ({', '.join(f'{k} {v}' for k, v in mix.items())}); "
          f"batch {args.batch_size}, {args.workers} bulk request(s) in flight, {args.rounds} round(s)")
    if atna_rate:
        print(f"collector ATNA XML -> envelope: {atna_rate:,.0f} events/s on one core (not part of the figures below)")

    stream = settings.index("events_data_stream")
    plain = f"{settings.id_prefix}-plain"
    state = Path(tempfile.mkdtemp(prefix="pacsguard-bench-"))
    install(cluster, settings, allow_missing_plugins=True)
    pipeline_rates: list[float] = []
    plain_rates: list[float] = []
    direct_rates: list[float] = []
    try:
        docs: list[dict[str, Any]] = []
        for round_no in range(1, args.rounds + 1):
            seconds, snap = run_pipeline(cluster, settings, messages, round_no, args.batch_size, args.workers, state)
            if snap["indexed"] + snap["failed"] != len(messages):
                raise SystemExit(f"round {round_no}: not every event settled: {snap}")
            if not docs:
                docs = normalized_docs(cluster, stream)
                make_plain_index(cluster, stream, plain)
            plain_seconds = run_plain(cluster, plain, docs, round_no, args.batch_size, args.workers)
            direct_seconds = run_direct(cluster, stream, messages, round_no, args.batch_size, args.workers)
            pipeline_rates.append(len(messages) / seconds)
            plain_rates.append(len(docs) / plain_seconds)
            direct_rates.append(len(messages) / direct_seconds)
            print(f"round {round_no}: collector+pipeline {pipeline_rates[-1]:7,.0f} events/s "
                  f"({snap['indexed']} indexed, {snap['failed']} failed) | plain bulk {plain_rates[-1]:7,.0f} docs/s "
                  f"| ratio {pipeline_rates[-1] / plain_rates[-1]:.0%} "
                  f"| control, pipeline without collector {direct_rates[-1]:7,.0f} events/s")
        pipeline_median, plain_median = statistics.median(pipeline_rates), statistics.median(plain_rates)
        ratio = pipeline_median / plain_median
        print(f"median: full pipeline {pipeline_median:,.0f} events/s, plain bulk {plain_median:,.0f} docs/s, "
              f"ratio {ratio:.0%} (target >= 70%: {'met' if ratio >= 0.7 else 'NOT met'}); "
              f"pipeline without the collector {statistics.median(direct_rates):,.0f} events/s")
        # Where the pipeline time goes, by source format (the node's per-processor
        # ingest stats are not usable for this: they count wall time of async batches).
        by_format: dict[str, list[str]] = {}
        for message, kind in zip(messages, kinds):
            by_format.setdefault(kind, []).append(message)
        figures: list[str] = []
        for kind, subset in sorted(by_format.items()):
            rate = len(subset) / run_direct(cluster, stream, subset, 1000 + len(figures), args.batch_size, args.workers)
            figures.append(f"{kind} {rate:,.0f}")
        print(f"pipeline without the collector, one format at a time (events/s): {', '.join(figures)}")
    finally:
        cluster.request("DELETE", f"/{plain}", ok_missing=True)
        uninstall(cluster, settings, purge=True)
        shutil.rmtree(state, ignore_errors=True)
        print(f"cleaned up: {stream}, {settings.index('failures')}, {plain} and the pack objects of "
              f"{settings.id_prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
