"""Ingest throughput and cost: the full pipeline vs its parsing floor and a plain bulk, and a per-step cost table.

    python benchmarks/ingest.py --url http://127.0.0.1:9200 --events 10000 --rounds 3

What it does:
1. installs an isolated pack (own id_prefix and namespace) on --url;
2. generates N realistic events: generic JSON (logins, shares, exports, role
   changes), Keycloak event lines, and ATNA audit messages (the dcm4chee samples
   with fresh timestamps) turned into the collector's envelope;
3. per round, measures (node CPU before and after each run, divided by the events: microseconds
   of node CPU per event; from /proc for a node on this machine, else _nodes/stats process.cpu)
   a. collector + pipeline: the collector's sender bulk-creates {"message": raw} into
      the data stream (router -> source pipeline -> enrich) until every event is settled;
   b. plain bulk: the documents the pipeline produced (read back once) bulk-created
      into a plain index with the same mappings and no pipeline; and once more through a
      pipeline of one `set` processor (node CPU only): the least any pipeline writing these
      documents costs, so floor / that is the ratio's ceiling with processors that cost nothing;
   c. full pipeline: the same {"message": raw} bulk-created straight into the data stream;
   d. floor: the same {"message": raw} bulk-created into an index whose pipeline holds one
      `json` processor (message -> parsed, ignore_failure for the text lines), with the
      data stream's mappings, `message` stored like event.original and `parsed` not indexed;
   all with the same batch size and number of requests in flight;
4. prints the rates, the ratios (full pipeline / floor: goal >= 0.5; full pipeline / plain
   bulk: target >= 70%), the CPU per event of each and the machine facts;
5. per-step cost table (the node's ingest stats cannot rank processors on 2.19: batching
   inflates the router's times and nested pipelines round to whole ms): the installed
   pipelines are copied with a `drop` processor after step k (nested pipelines expanded
   in order; the source pipelines side by side, step j of each), the events run through
   each cut, and a step's cost is the CPU per event of its cut minus the previous one's;
   the last row is indexing (the full pipeline minus the cut after its last step);
6. removes everything it created.

Not a test: numbers depend on the machine; run it on the hardware you size.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
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
              workers: int, pipeline: str | None = None) -> float:
    """Seconds to bulk-create the normalized docs, `workers` requests in flight (through `pipeline`, if named)."""
    tag = "plain" if pipeline is None else "bare"
    lines = [f'{{"create":{{"_id":"{make_id(tag, round_no, n)}"}}}}\n{json.dumps(d, ensure_ascii=False)}\n'
             for n, d in enumerate(docs)]
    params = {} if pipeline is None else {"pipeline": pipeline}
    bodies = ["".join(lines[i:i + batch]) for i in range(0, len(lines), batch)]

    def send(body: str) -> int:
        response = cluster.request("POST", f"/{plain}/_bulk", body=body, params=params)
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


def node_cpu_ms(cluster: Cluster) -> float:
    """CPU milliseconds the node processes have used (summed over the nodes). A node on this machine is read
    from /proc (exact, no lag); another from _nodes/stats, which the node refreshes once a second
    (monitor.process.refresh_interval): then it waits that long for a fresh figure."""
    nodes = cluster.request("GET", "/_nodes/process")["nodes"]
    pids = [n.get("process", {}).get("id") for n in nodes.values()]
    stats = [Path(f"/proc/{pid}/stat") for pid in pids]
    if cluster.url.split("//")[-1].startswith(("127.0.0.1", "localhost")) and all(p.exists() for p in stats):
        ticks = os.sysconf("SC_CLK_TCK")
        # utime and stime: fields 14 and 15, counted after the ")" that closes the command name
        return sum(sum(int(f) for f in p.read_text().rsplit(")", 1)[1].split()[11:13]) for p in stats) * 1000 / ticks
    time.sleep(1.1)
    nodes = cluster.request("GET", "/_nodes/stats/process")["nodes"]
    return sum(n["process"]["cpu"]["total_in_millis"] for n in nodes.values())


def run_direct(cluster: Cluster, index: str, messages: list[str], tag: str, batch: int, workers: int,
               pipeline: str | None = None) -> tuple[float, float]:
    """The raw messages bulk-created as {"message": raw} into `index` (through `pipeline` if given, else
    the index's own): (seconds, node CPU microseconds per event)."""
    lines = [f'{{"create":{{"_id":"{make_id(tag, n)}"}}}}\n{json.dumps({"message": m}, ensure_ascii=False)}\n'
             for n, m in enumerate(messages)]
    bodies = ["".join(lines[i:i + batch]) for i in range(0, len(lines), batch)]
    params = {"pipeline": pipeline} if pipeline else None

    def send(body: str) -> int:
        return len(cluster.request("POST", f"/{index}/_bulk", body=body, params=params)["items"])

    cpu = node_cpu_ms(cluster)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(send, bodies))
    seconds = time.perf_counter() - started
    assert total == len(messages)
    return seconds, (node_cpu_ms(cluster) - cpu) * 1000 / len(messages)


def make_floor(cluster: Cluster, stream: str, floor: str) -> None:
    """The floor: one `json` processor, into an index with the data stream's mappings."""
    mappings = next(iter(cluster.request("GET", f"/{stream}/_mapping").values()))["mappings"]
    mappings.pop("_data_stream_timestamp", None)
    mappings["properties"]["message"] = {"type": "keyword", "index": False, "doc_values": False}
    mappings["properties"]["parsed"] = {"type": "object", "enabled": False}
    cluster.request("PUT", f"/_ingest/pipeline/{floor}", body={
        "description": "pacsguard benchmark: the parsing floor",
        "processors": [{"json": {"field": "message", "target_field": "parsed", "ignore_failure": True}}]})
    cluster.request("PUT", f"/{floor}", body={
        "settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1", "refresh_interval": "1s",
                               "default_pipeline": floor, "mapping": {"total_fields": {"limit": 2000}}}},
        "mappings": mappings})


# ------------------------------------------------------------------ per-step cost


def processor_label(processor: dict[str, Any]) -> str:
    kind, conf = next(iter(processor.items()))
    return f"{conf.get('tag', '-')} ({kind}{', if' if 'if' in conf else ''})"


def steps_of(pipelines: dict[str, dict[str, Any]], names: list[str], prefix: str,
             formats: list[str]) -> list[tuple[list[tuple[str, int]], str]]:
    """Every step of the pipelines `names` (run side by side) in order, nested pipeline calls expanded:
    (where a drop goes after it, as (pipeline, index) per pipeline run side by side, label)."""
    steps: list[tuple[list[tuple[str, int]], str]] = []
    bodies = {name: pipelines[name]["processors"] for name in names if name in pipelines}
    for j in range(max(len(b) for b in bodies.values())):
        # a pipeline shorter than the others gets its drop at its end
        at = [(name, min(j, len(body) - 1)) for name, body in bodies.items()]
        running = [name for name, body in bodies.items() if j < len(body)]
        calls = [bodies[name][j]["pipeline"]["name"] for name in running if "pipeline" in bodies[name][j]]
        if calls:
            # a call by a name template runs one pipeline per format: expand them side by side
            callees = sorted({c.replace("{{_pg.format}}", f) for c in calls for f in formats}
                             if any("{{" in c for c in calls) else set(calls))
            steps += steps_of(pipelines, [c for c in callees if c in pipelines], prefix, formats)
            continue
        where = ", ".join(sorted(name.removeprefix(prefix + "-") for name in running))
        labels = sorted({processor_label(bodies[name][j]) for name in running})
        steps.append((at, f"{where}: {' | '.join(labels)}"))
    return steps


def install_cut(cluster: Cluster, pipelines: dict[str, dict[str, Any]], prefix: str, cut: str,
                after: list[tuple[str, int]]) -> str:
    """Copies of every pack pipeline under `cut`-* with a `drop` after the given steps; the router's name."""
    def rename(node: Any) -> None:
        if isinstance(node, dict):
            call = node.get("pipeline")
            if isinstance(call, dict) and isinstance(call.get("name"), str):
                call["name"] = call["name"].replace(f"{prefix}-", f"{cut}-", 1)
            for value in node.values():
                rename(value)
        elif isinstance(node, list):
            for value in node:
                rename(value)

    for name, body in pipelines.items():
        copy = json.loads(json.dumps(body))
        copy.pop("version", None)
        rename(copy)
        for where, index in after:
            if where == name:
                copy["processors"].insert(index + 1, {"drop": {"tag": "bench_cut"}})
        cluster.request("PUT", f"/_ingest/pipeline/{cut}-{name.removeprefix(prefix + '-')}", body=copy)
    return f"{cut}-router"


def step_costs(cluster: Cluster, settings: Settings, sink: str, messages: list[str], batch: int, workers: int,
               rounds: int) -> list[tuple[str, float]]:
    """(step, node CPU us per event of the pipeline cut after it), median of `rounds` runs."""
    prefix = settings.scope
    pipelines = {name: body for name, body in cluster.request("GET", f"/_ingest/pipeline/{prefix}-*").items()
                 if "-cut" not in name}
    formats = [n.removeprefix(prefix + "-") for n in pipelines if n not in (f"{prefix}-router", f"{prefix}-enrich")]
    steps = steps_of(pipelines, [f"{prefix}-router"], prefix, formats)
    figures: list[tuple[str, float]] = []
    try:
        for k, (after, label) in enumerate(steps):
            router = install_cut(cluster, pipelines, prefix, f"{prefix}-cut{k}", after)
            cpus = [run_direct(cluster, sink, messages, f"cut{k}-{r}", batch, workers, router)[1]
                    for r in range(rounds)]
            figures.append((label, statistics.median(cpus)))
    finally:
        for k in range(len(steps)):
            cluster.request("DELETE", f"/_ingest/pipeline/{prefix}-cut{k}-*", ok_missing=True)
    return figures


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
    floor = f"{settings.id_prefix}floor"
    state = Path(tempfile.mkdtemp(prefix="pacsguard-bench-"))
    install(cluster, settings, allow_missing_plugins=True)
    # the least any pipeline writing these documents costs: one `set` processor over the normalized
    # documents (turning the source into an ingest document and back), then indexing
    bare = f"{settings.id_prefix}bare"
    cluster.request("PUT", f"/_ingest/pipeline/{bare}",
                    body={"processors": [{"set": {"field": "event.dataset", "value": "pacs.audit"}}]})
    rates: dict[str, list[float]] = {"collector": [], "plain": [], "full": [], "floor": []}
    cpu: dict[str, list[float]] = {"collector": [], "plain": [], "full": [], "floor": [], "bare": []}
    try:
        docs: list[dict[str, Any]] = []
        for round_no in range(1, args.rounds + 1):
            before = node_cpu_ms(cluster)
            seconds, snap = run_pipeline(cluster, settings, messages, round_no, args.batch_size, args.workers, state)
            cpu["collector"].append((node_cpu_ms(cluster) - before) * 1000 / len(messages))
            if snap["indexed"] + snap["failed"] != len(messages):
                raise SystemExit(f"round {round_no}: not every event settled: {snap}")
            if not docs:
                docs = normalized_docs(cluster, stream)
                make_plain_index(cluster, stream, plain)
                make_floor(cluster, stream, floor)
            before = node_cpu_ms(cluster)
            plain_seconds = run_plain(cluster, plain, docs, round_no, args.batch_size, args.workers)
            cpu["plain"].append((node_cpu_ms(cluster) - before) * 1000 / len(docs))
            before = node_cpu_ms(cluster)
            run_plain(cluster, plain, docs, round_no, args.batch_size, args.workers, pipeline=bare)
            cpu["bare"].append((node_cpu_ms(cluster) - before) * 1000 / len(docs))
            full_seconds, full_cpu = run_direct(cluster, stream, messages, f"direct{round_no}", args.batch_size,
                                                args.workers)
            floor_seconds, floor_cpu = run_direct(cluster, floor, messages, f"floor{round_no}", args.batch_size,
                                                  args.workers)
            cpu["full"].append(full_cpu)
            cpu["floor"].append(floor_cpu)
            rates["collector"].append(len(messages) / seconds)
            rates["plain"].append(len(docs) / plain_seconds)
            rates["full"].append(len(messages) / full_seconds)
            rates["floor"].append(len(messages) / floor_seconds)
            print(f"round {round_no}: collector+pipeline {rates['collector'][-1]:7,.0f} events/s "
                  f"({snap['indexed']} indexed, {snap['failed']} failed) | plain bulk {rates['plain'][-1]:7,.0f} "
                  f"docs/s | full pipeline {rates['full'][-1]:7,.0f} events/s | floor (one json processor) "
                  f"{rates['floor'][-1]:7,.0f} events/s | ratio full/floor {rates['full'][-1] / rates['floor'][-1]:.2f}")
        median = {k: statistics.median(v) for k, v in rates.items()}
        cpu_median = {k: statistics.median(v) for k, v in cpu.items()}
        ratio = median["full"] / median["floor"]
        plain_ratio = median["collector"] / median["plain"]
        print(f"median: full pipeline {median['full']:,.0f} events/s vs floor {median['floor']:,.0f} events/s: "
              f"ratio {ratio:.2f} (goal >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'})")
        print(f"median: collector+pipeline {median['collector']:,.0f} events/s, plain bulk {median['plain']:,.0f} "
              f"docs/s, ratio {plain_ratio:.0%} (target >= 70%: {'met' if plain_ratio >= 0.7 else 'NOT met'})")
        print("node CPU per event (median, us): " + ", ".join(
            f"{label} {cpu_median[k]:,.0f}" for k, label in (("full", "full pipeline"), ("floor", "floor"),
                                                             ("plain", "plain bulk"),
                                                             ("bare", "plain bulk through one `set`"),
                                                             ("collector", "collector+pipeline"))))
        print(f"ceiling of the ratio with processors that cost nothing: floor / (plain bulk through one `set`) = "
              f"{cpu_median['floor'] / cpu_median['bare']:.2f}")
        # Where the pipeline time goes, by source format.
        by_format: dict[str, list[str]] = {}
        for message, kind in zip(messages, kinds):
            by_format.setdefault(kind, []).append(message)
        figures: list[str] = []
        for kind, subset in sorted(by_format.items()):
            seconds, per_event = run_direct(cluster, stream, subset, f"fmt-{kind}", args.batch_size, args.workers)
            figures.append(f"{kind} {len(subset) / seconds:,.0f} events/s, {per_event:,.0f} us")
        print(f"full pipeline, one format at a time: {'; '.join(figures)}")
        # Per-step cost: the pipelines cut after each step (a drop processor), median CPU of the rounds.
        costs = step_costs(cluster, settings, plain, messages, args.batch_size, args.workers, args.rounds)
        print("per-step cost, node CPU us per event (pipeline cut after the step; the step = the difference):")
        rows = [*costs, ("indexing (full pipeline minus the last cut)", cpu_median["full"])]
        width = max(len(label) for label, _ in rows)
        print(f"  {'step':<{width}} {'cut':>6} {'step':>6}")
        previous = 0.0
        for label, value in rows:
            print(f"  {label:<{width}} {value:6.0f} {value - previous:6.0f}")
            previous = value
        print(f"  {'floor (one json processor, indexed)':<{width}} {cpu_median['floor']:6.0f}")
    finally:
        cluster.request("DELETE", f"/{plain}", ok_missing=True)
        cluster.request("DELETE", f"/{floor}", ok_missing=True)
        cluster.request("DELETE", f"/_ingest/pipeline/{floor}", ok_missing=True)
        cluster.request("DELETE", f"/_ingest/pipeline/{bare}", ok_missing=True)
        uninstall(cluster, settings, purge=True)
        shutil.rmtree(state, ignore_errors=True)
        print(f"cleaned up: {stream}, {settings.index('failures')}, {plain}, {floor} and the pack objects of "
              f"{settings.id_prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
