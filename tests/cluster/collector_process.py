"""Run one collector as its own process (for kill -9 tests): argv[1] is a JSON description.

{"url", "prefix", "namespace", "state", "tcp_port", "key_b64"[, "file"]} -> prints the final counters as JSON on
SIGTERM. With "file", it also tails that JSON-lines file.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

from pacsguard.collector.sender import SenderConfig
from pacsguard.collector.service import CollectorConfig, Listen, run_collector
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import load_settings


def main() -> None:
    spec = json.loads(sys.argv[1])
    settings = load_settings(overrides={"cluster": {"url": spec["url"], "timeout_seconds": 5},
                                        "id_prefix": spec["prefix"], "namespace": spec["namespace"],
                                        # the tests' key (tests/conftest.py)
                                        "pseudonymization": {"envelope_key": os.environ["PACSGUARD_ENVELOPE_KEY"]}},
                            environ={})
    files = ((Path(spec["file"]), "json"),) if spec.get("file") else ()
    config = CollectorConfig(state_dir=Path(spec["state"]), tcp=(Listen("127.0.0.1", spec["tcp_port"]),), files=files,
                             sender=SenderConfig(batch_size=500, retry_budget=1.0), progress_interval=0,
                             shutdown_timeout=5, failures_key=base64.b64decode(spec["key_b64"]))
    snap = run_collector(config, Cluster.connect(settings.cluster), settings, lambda line: None)
    print(json.dumps(snap), flush=True)


if __name__ == "__main__":
    main()
