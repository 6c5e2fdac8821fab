"""What an idle `pacsguard watch` costs: requests to the cluster by kind, CPU and memory (a script, not a test).

It installs an isolated pack (prefix pgidle) without Alerting, so every enabled
rule runs on the pack's engine, and runs a real `pacsguard watch` process (its
jobs included, every `engine.jobs_every`) for --seconds with no event
arriving. The process talks to the node through a counting proxy in this
script, which prints every request kind (method and endpoint) with its count,
then the CPU time and peak RSS of the watch process.

Anchor (issue 22): ElastAlert2 made 15 requests in 5 minutes for one rule.

    python benchmarks/watch_idle.py --url http://127.0.0.1:9200 --seconds 300
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from machine import load_average, machine_facts
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import load_settings
from pacsguard.services.install import install, uninstall


class CountingProxy:
    """Forwards every request to the node and counts them by (method, endpoint)."""

    def __init__(self, target: str) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.counting = False
        parts = urlsplit(target)
        host, port, outer = parts.hostname or "127.0.0.1", parts.port or 9200, self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.counting:
                    outer.counts[f"{self.command} {endpoint(self.path)}"] += 1
                conn = http.client.HTTPConnection(host, port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                res = conn.getresponse()
                data = res.read()
                self.send_response(res.status)
                for k, v in res.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def endpoint(path: str) -> str:
    """'/pgidle-alerts-idle/_search?x' -> 'alerts/_search': the indices' roles and the API."""
    parts = [p for p in urlsplit(path).path.split("/") if p]
    api = next((p for p in reversed(parts) if p.startswith("_")), "")
    names = parts[0].split(",") if parts and not parts[0].startswith("_") else []
    roles = ",".join("events" if n.startswith("logs-") else n.removeprefix("pgidle-").removesuffix("-idle")
                     for n in names)
    return f"{roles}/{api}" if roles else api


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("PACSGUARD_TEST_URL", "http://127.0.0.1:9200"))
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of start-up not counted")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pacsguard-idle-"))
    user_settings = work / "settings.yaml"
    user_settings.write_text(json.dumps({"id_prefix": "pgidle", "namespace": "idle", "engine": {"mode": "pacsguard"}}))
    env = {**os.environ, "PACSGUARD_SALT": "idle-salt-0123456789abcdef"}
    settings = load_settings(user_settings, {"cluster": {"url": args.url}}, env)
    cluster = Cluster.connect(settings.cluster)
    for line in machine_facts(cluster):
        print(line, flush=True)
    uninstall(cluster, settings, purge=True)
    install(cluster, settings, allow_missing_plugins=True)
    proxy = CountingProxy(args.url)
    watch = subprocess.Popen([sys.executable, "-m", "pacsguard.cli", "--url", proxy.url, "--settings",
                              str(user_settings), "watch"], env=env, stdout=subprocess.DEVNULL,
                             stderr=open(work / "watch.log", "w"))  # noqa: SIM115 - lives as long as the process
    try:
        time.sleep(args.warmup)
        cpu0 = cpu_seconds(watch.pid)
        proxy.counting = True
        time.sleep(args.seconds)
        proxy.counting = False
        cpu = cpu_seconds(watch.pid) - cpu0
        peak = rss_mb(watch.pid)
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=120)
        uninstall(cluster, settings, purge=True)
    total = sum(proxy.counts.values())
    print(f"after the run: {load_average()}")
    print(f"watch idle for {args.seconds:g} s (after {args.warmup:g} s of start-up; log {work / 'watch.log'}): "
          f"{total} requests ({total / args.seconds * 60:.1f} per minute), CPU {cpu:.2f} s "
          f"= {cpu / args.seconds:.2%} of one core, peak RSS {peak:.0f} MB")
    print(f"{'requests':>8}  kind")
    for kind, n in proxy.counts.most_common():
        print(f"{n:>8}  {kind}")


if __name__ == "__main__":
    main()
