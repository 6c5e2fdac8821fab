"""What every benchmark prints first: the command, the machine and its load (a helper, not a benchmark)."""

from __future__ import annotations

import os
import platform
import shlex
import sys

from pacsguard.core.connection import Cluster


def machine_facts(cluster: Cluster | None = None) -> list[str]:
    """The command, cores, load average and, with a cluster, the node's version, heap and processors."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = ["command: " + shlex.join([sys.executable, *sys.argv]),
             (f"nproc {cpus} (os.cpu_count {os.cpu_count()}), {platform.machine()}, {platform.platform()}; "
              f"load average {load}")]
    if cluster is not None:
        info = cluster.info()
        nodes = cluster.request("GET", "/_nodes/jvm,os")["nodes"]
        node = next(iter(nodes.values()))
        heap = node.get("jvm", {}).get("mem", {}).get("heap_max_in_bytes", 0) // (1024 * 1024)
        lines.append(f"python {platform.python_version()}; OpenSearch {info['version']['number']} at "
                     f"{cluster.url}, {len(nodes)} node(s), heap {heap} MiB, node processors "
                     f"{node.get('os', {}).get('allocated_processors')}")
    return lines


def load_average() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
