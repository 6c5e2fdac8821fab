"""Port claims for local nodes: two test runs on one machine never get the same node port, and a
port someone else listens on is passed over (no node is started here)."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsguard.devnode import local


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Lock files and run directories of these tests live in a cache of their own."""
    monkeypatch.setenv("PACSGUARD_CACHE", str(tmp_path / "cache"))
    yield tmp_path / "cache"


def free_base(span: int = 8) -> int:
    """A port p with p..p+span and their transport ports free right now (from the OS's ephemeral range)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + span + local.TRANSPORT_PORT_OFFSET < 65536 and all(
                local.bindable(p) and local.bindable(p + local.TRANSPORT_PORT_OFFSET) for p in range(base, base + span)):
            return base
    raise AssertionError("no free port range")


def test_two_claims_get_two_ports_and_a_release_gives_the_port_back() -> None:
    base = free_base()
    first = local.claim_port(base)
    second = local.claim_port(base)
    try:
        assert first.port == base and second.port == base + 1
    finally:
        first.release()
    third = local.claim_port(base)
    try:
        assert third.port == base
    finally:
        second.release()
        third.release()


def test_a_port_in_use_is_passed_over() -> None:
    base = free_base()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base))
        busy.listen()
        claim = local.claim_port(base)
        try:
            assert claim.port == base + 1
        finally:
            claim.release()


def test_a_port_whose_transport_port_is_in_use_is_passed_over() -> None:
    base = free_base()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + local.TRANSPORT_PORT_OFFSET))
        claim = local.claim_port(base)
        try:
            assert claim.port == base + 1
        finally:
            claim.release()


def test_a_port_with_a_recorded_running_node_is_passed_over(own_cache: Path) -> None:
    """A node another run started and whose HTTP port is not open yet (still booting): its state
    file names a live process that looks like OpenSearch, so the port is taken."""
    base = free_base()
    booting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                "org.opensearch.bootstrap.OpenSearch"])
    try:
        cmdline = Path(f"/proc/{booting.pid}/cmdline")
        for _ in range(100):  # until the child has exec'd (before that its cmdline is ours)
            if b"org.opensearch.bootstrap.OpenSearch" in cmdline.read_bytes():
                break
            time.sleep(0.05)
        state = local.run_dir_for(base) / "node.json"
        state.parent.mkdir(parents=True)
        state.write_text(json.dumps({"pid": booting.pid, "port": base, "url": "", "home": "", "run_dir": "",
                                     "log": ""}))
        claim = local.claim_port(base)
        try:
            assert claim.port == base + 1
        finally:
            claim.release()
    finally:
        booting.kill()
        booting.wait()


def _claim_in_child(base: int, cache: str, ready: Any, out: Any) -> None:
    os.environ["PACSGUARD_CACHE"] = cache
    ready.wait()  # every process probes the same ports at the same moment
    claim = local.claim_port(base)
    out.put(claim.port)
    ready.wait()  # hold the claim until every process has one


def test_concurrent_claims_from_several_processes_never_collide(own_cache: Path) -> None:
    base = free_base(span=12)
    ctx = multiprocessing.get_context("fork")
    count = 6
    ready = ctx.Barrier(count)
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_child, args=(base, str(own_cache), ready, out)) for _ in range(count)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    ports = sorted(out.get(timeout=5) for _ in range(count))
    assert all(proc.exitcode == 0 for proc in procs)
    assert ports == list(range(base, base + count))


def test_no_free_port_is_a_clear_error() -> None:
    base = free_base(span=3)
    claims = [local.claim_port(base, attempts=3) for _ in range(3)]
    try:
        with pytest.raises(local.PacsguardError, match=rf"no free port for a local node in {base}..{base + 2}"):
            local.claim_port(base, attempts=3)
    finally:
        for claim in claims:
            claim.release()
