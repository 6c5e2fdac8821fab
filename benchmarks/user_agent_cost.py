"""Ingest time of one event by the length of its user agent, with the pack's cap and without (issue 16, item 6).

    PYTHONPATH=installer python benchmarks/user_agent_cost.py --url http://127.0.0.1:9200
    PYTHONPATH=installer python benchmarks/user_agent_cost.py --url ... --lengths 100,10000,20000 --rounds 3

Installs two isolated packs on --url: one with the default ``user_agent_parse_max_chars``
(the user_agent processor parses a capped copy) and one with the cap out of reach (as the
pipeline was before the cap), indexes single events whose user agent has each length
through the installed router (``PUT <data stream>/_create/<id>``, one at a time), prints
the median time per event for both, then removes both packs. Not a test: the figures
depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings, load_settings
from pacsguard.services.install import install, uninstall

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


def agent(length: int) -> str:
    """A browser user agent padded to ``length`` characters with more of the same tokens.

    Each one unique (a token near its start): the user_agent processor caches the strings it parsed,
    and a repeated one would measure the cache."""
    text = f"{BROWSER} build/{uuid.uuid4().hex}"
    while len(text) < length:
        text += " " + BROWSER
    return text[:length]


def seconds_per_event(cluster: Cluster, settings: Settings, length: int, rounds: int) -> float:
    stream = settings.index("events_data_stream")
    times = []
    for _ in range(rounds):
        event = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "app": "cloudpacs",
                 "action": "user-login", "user": "alice", "source_ip": "81.2.69.142", "user_agent": agent(length)}
        started = time.perf_counter()
        cluster.request("PUT", f"/{stream}/_create/{uuid.uuid4().hex}", body={"message": json.dumps(event)})
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:9200")
    parser.add_argument("--lengths", default="100,10000,20000", help="user agent lengths, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    tag = uuid.uuid4().hex[:6]
    packs = {}
    for name, cap in (("capped", None), ("uncapped", 10**7)):
        overrides: dict[str, object] = {"cluster": {"url": args.url, "timeout_seconds": 300},
                                        "id_prefix": f"pgbenchua{name[0]}{tag}", "namespace": f"ua{name[0]}{tag}",
                                        "pseudonymization": {"salt": "benchmark-salt-0123456789"}}
        if cap is not None:
            overrides["thresholds"] = {"user_agent_parse_max_chars": cap}
        packs[name] = load_settings(overrides=overrides, environ={})
    cluster = Cluster.connect(packs["capped"].cluster)
    try:
        for settings in packs.values():
            install(cluster, settings, allow_missing_plugins=True)
        for settings in packs.values():
            seconds_per_event(cluster, settings, 100, 2)  # warm-up: the first events compile the pipelines' scripts
        cap = packs["capped"].thresholds.user_agent_parse_max_chars
        print(f"median seconds per event over {args.rounds} round(s), through the installed router on {args.url}")
        print(f"{'user agent chars':>16}  {'with the cap (' + str(cap) + ')':>20}  {'without a cap':>14}")
        for length in lengths:
            capped = seconds_per_event(cluster, packs["capped"], length, args.rounds)
            uncapped = seconds_per_event(cluster, packs["uncapped"], length, args.rounds)
            print(f"{length:>16}  {capped:>20.3f}  {uncapped:>14.3f}", flush=True)
    finally:
        for settings in packs.values():
            uninstall(cluster, settings, purge=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
