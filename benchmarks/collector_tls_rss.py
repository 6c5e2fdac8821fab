"""The collector's memory under pending TLS handshakes (issue 16, item 6).

    PYTHONPATH=installer python benchmarks/collector_tls_rss.py --handshakes 3000
    # the same against another tree (e.g. main, extracted with `git archive main installer | tar -x -C /tmp/main`):
    PYTHONPATH=installer python benchmarks/collector_tls_rss.py --handshakes 3000 --tree /tmp/main/installer

Starts a collector with one TLS listener in a process of its own (from ``--tree``, default this
checkout; no cluster needed: events would wait in the journal), opens ``--handshakes``
connections from one address, each sending a TLS ClientHello and then nothing, and prints
the collector's RSS (VmRSS) before, with the handshakes pending, and 5 s after they closed,
with the listener's accounting (`inputs` of /health). Not a test: the figures depend on
the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNNER = """
import json, sys, time
from pathlib import Path
from pacsguard.collector import CollectorConfig, CollectorThread, Listen
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import load_settings
folder = Path(sys.argv[1])
settings = load_settings(overrides={"cluster": {"url": "http://127.0.0.1:9", "timeout_seconds": 1},
                                    "id_prefix": "pgbenchrss", "namespace": "rss"}, environ={})
config = CollectorConfig(state_dir=folder / "state", tls=(Listen("127.0.0.1", 0),), tls_cert=folder / "cert.pem",
                         tls_key=folder / "key.pem", progress_interval=0)
thread = CollectorThread(config, Cluster.connect(settings.cluster), settings).start()
print(json.dumps({"port": thread.ports["tls"][0]}), flush=True)
for line in sys.stdin:
    print(json.dumps(thread.collector.snapshot().get("inputs", {})), flush=True)
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def client_hello() -> bytes:
    """The bytes of a TLS ClientHello (a client that then never answers the server)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=3000)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1] / "installer",
                        help="the installer/ folder whose collector is measured")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.handshakes + 256)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-subj", "/CN=127.0.0.1", "-days", "1", "-keyout", str(folder / "key.pem"),
                        "-out", str(folder / "cert.pem")], check=True, capture_output=True)
        env = {**os.environ, "PYTHONPATH": str(args.tree.resolve()), "PACSGUARD_SALT": "benchmark-salt-0123456789"}
        # The collector inherits the raised file limit.
        collector = subprocess.Popen([sys.executable, "-c", RUNNER, str(folder)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert collector.stdout is not None and collector.stdin is not None
        port = json.loads(collector.stdout.readline())["port"]
        time.sleep(1.0)
        before = rss_mib(collector.pid)
        hello = client_hello()
        socks = []
        for _ in range(args.handshakes):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                sock.sendall(hello)
            except OSError:
                pass  # refused and closed already
            socks.append(sock)
        time.sleep(3.0)
        pending = rss_mib(collector.pid)
        collector.stdin.write("\n")
        collector.stdin.flush()
        inputs = collector.stdout.readline().strip()
        for sock in socks:
            sock.close()
        time.sleep(5.0)
        after = rss_mib(collector.pid)
        collector.stdin.close()
        collector.terminate()
        collector.wait(30)
    print(f"collector from {args.tree}")
    print(f"{args.handshakes} pending TLS handshakes from one address: RSS {before:.0f} MiB before, "
          f"{pending:.0f} MiB with them pending, {after:.0f} MiB 5 s after they closed")
    print(f"listener accounting: {inputs or '{}'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
