"""Issue 16, items 5-7: the collector under a full disk, cost attacks and counting, on loopback against the node.

Each test asserts what a user would see: the answers senders get, /health, what the
node stored (exactly once), and counters that reconcile.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsguard.collector import Listen
from pacsguard.collector.limits import Limits
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from test_collector_hardening import (
    TOKEN,
    audit_event,
    collector,
    free_port,
    generic,
    http,
    journal_lines,
    octet,
    post,
    reconciles,
    settle,
    start_process,
    stored,
    syslog,
)
from tlsproxy import make_ca_and_cert

pytestmark = pytest.mark.cluster
LOCAL = ("127.0.0.1", 0)


def health(port: int) -> tuple[int, dict[str, Any]]:
    return http(port, f"GET /health HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode())


def markers(cluster: Cluster, settings: Settings) -> list[str]:
    """event.id of each stored event ("fhir" for a FHIR AuditEvent, whose pipeline keeps no id)."""
    return [h["_source"]["event"].get("id", h["_source"]["pacs"]["source_format"])
            for h in stored(cluster, settings)["events"]]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs for the collector's state dir (root only; skipped where mounting is not allowed)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the journal needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=False,
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte with a ballast file."""
    ballast = directory / "ballast"
    with ballast.open("wb", buffering=0) as handle:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return ballast


# ------------------------------------------------------------------ item 5: a full disk


def test_item5_full_disk_refuses_clearly_keeps_health_backs_off_and_recovers_exactly_once(
        cluster: Cluster, pack: Settings, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pacsguard.collector")
    thread = collector(pack, small_disk, tcp=(Listen(*LOCAL),), udp=(Listen(*LOCAL),), http=(Listen(*LOCAL),))
    tcp, udp, web = thread.ports["tcp"][0], thread.ports["udp"][0], thread.ports["http"][0]
    frames = b"".join(octet(syslog(generic(f"disk-{n}"))) for n in range(50))
    try:
        ballast = fill(small_disk)
        with socket.create_connection(("127.0.0.1", tcp), timeout=10) as sock:
            sock.sendall(frames)  # in the socket buffers: the collector waits to journal them
            time.sleep(0.5)
            refused = post(web, "/fhir/AuditEvent", json.dumps(audit_event("while-full")).encode())
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dgram:
                for n in range(5):
                    dgram.sendto(syslog(generic(f"udp-{n}")), ("127.0.0.1", udp))
            time.sleep(0.3)
            cpu_before, logs_before = time.process_time(), len(caplog.records)
            time.sleep(3.0)  # the fault lasts: the collector waits, it does not spin or log on
            cpu, logged = time.process_time() - cpu_before, len(caplog.records) - logs_before
            status, during = health(web)
            not_ready = http(web, b"GET /ready HTTP/1.1\r\nConnection: close\r\n\r\n")  # a balancer's check
            ballast.unlink()  # space comes back
            final = settle(thread, 56, timeout=60)
        again = post(web, "/fhir/AuditEvent", json.dumps(audit_event("after-full")).encode())
        final = settle(thread, 57, timeout=60)
    finally:
        final = thread.stop()
    assert refused[0] == 507 and "No space left on device" in refused[1]["issue"][0]["diagnostics"], refused
    assert refused[1]["accepted"] == 0
    assert status == 200 and during["journal"]["writable"] is False
    assert not_ready[0] == 503 and not_ready[1]["ready"] is False and "No space left" in not_ready[1]["reason"]
    assert "No space left on device" in during["journal"]["error"]
    assert cpu < 1.0, f"{cpu:.2f}s of CPU in 3s of a full disk: the collector spins"
    assert logged <= 3, [r.getMessage() for r in caplog.records[-10:]]
    assert again[0] == 202
    assert final["rejected_by_reason"] == {"journal_unwritable": 6}, final  # the refused HTTP event, 5 datagrams
    assert final["indexed"] == 51 and final["received"] == 57 and final["spooled"] == 0, final
    reconciles(final)
    seen = markers(cluster, pack)
    assert sorted(seen) == sorted([f"disk-{n}" for n in range(50)] + ["fhir"])  # each once, none twice


def test_item5_settled_segments_are_deleted_so_a_small_disk_never_fills(
        cluster: Cluster, pack: Settings, small_disk: Path) -> None:
    """6 MiB through a 2 MiB disk, 100 events at a time: the journal holds what is pending plus a settled
    quarter MiB, not a 64 MiB segment that fills the disk while a few KB are pending."""
    total = 3000
    padding = "p" * 2000
    thread = collector(pack, small_disk, tcp=(Listen(*LOCAL),), http=(Listen(*LOCAL),))
    peak = 0
    try:
        with socket.create_connection(("127.0.0.1", thread.ports["tcp"][0]), timeout=30) as sock:
            for start in range(0, total, 100):
                sock.sendall(b"".join(octet(syslog(generic(f"rot-{n}", note=padding)))
                                      for n in range(start, start + 100)))
                settle(thread, start + 100, timeout=60)
                peak = max(peak, sum(p.stat().st_size for p in (small_disk / "spool").glob("seg-*.ndjson")))
        final = settle(thread, total, timeout=60)
    finally:
        final = thread.stop()
    assert final["indexed"] == total and final["rejected"] == 0, final
    assert peak < 1024 * 1024, peak
    assert len(set(markers(cluster, pack))) == total


# ------------------------------------------------------------------ item 6: bounded costs


def test_item6_the_user_agent_processor_parses_a_capped_copy_and_the_whole_value_is_kept(
        cluster: Cluster, pack: Settings) -> None:
    agent = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 " + "x" * 3000
    router = f"{pack.scope}-router"
    message = generic("long-ua", user_agent=agent)
    res = cluster.request("POST", f"/_ingest/pipeline/{pack.scope}-enrich/_simulate", params={"verbose": "true"},
                          body={"docs": [{"_source": {"@timestamp": "2026-12-01T10:00:00Z",
                                                      "event": {"action": "user-login", "outcome": "success"},
                                                      "user": {"name": "alice"},
                                                      "user_agent": {"original": agent}}}]})
    steps = res["docs"][0]["processor_results"]
    before_ua = next(i for i, s in enumerate(steps) if s.get("tag") == "ua") - 1
    fed = steps[before_ua]["doc"]["_source"]["user_agent"]["original"]
    cap = pack.thresholds.user_agent_parse_max_chars
    assert len(fed) == cap and agent.startswith(fed)  # the expensive processor sees the capped copy
    doc = cluster.request("POST", f"/_ingest/pipeline/{router}/_simulate",
                          body={"docs": [{"_source": {"message": message}}]})["docs"][0]["doc"]["_source"]
    assert doc["user_agent"]["original"] == agent  # kept whole
    assert doc["user_agent"]["name"] == "Firefox" and "_pgua" not in doc


def test_item6_tls_connections_are_limited_before_their_handshake(
        cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path)
    limits = Limits(max_connections=40, max_connections_per_address=5)
    thread = collector(pack, tmp_path / "state", tls=(Listen(*LOCAL),), tls_cert=cert, tls_key=key, limits=limits)
    port = thread.ports["tls"][0]
    pending = []
    try:
        for _ in range(60):  # never start the handshake: the collector must not hold TLS state for them
            pending.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(0.5)
        gate = thread.collector.snapshot()["inputs"][f"tls:{port}"]
        context = ssl.create_default_context(cafile=str(ca))
        plain = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0), timeout=10)
        with context.wrap_socket(plain, server_hostname="127.0.0.1") as sock:
            sock.sendall(octet(syslog(generic("tls-other-address"))))
        final = settle(thread, 1)
    finally:
        for sock in pending:
            sock.close()
        final = thread.stop()
    assert gate["open"] == 5 and gate["refused"]["too_many_connections_from_address"] == 55, gate
    assert final["indexed"] == 1 and markers(cluster, pack) == ["tls-other-address"]


def test_item6_silent_connections_of_a_few_addresses_cannot_lock_out_other_senders(
        cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    limits = Limits(max_connections=24, max_connections_per_address=8, evict_silent_after=0.5)
    thread = collector(pack, tmp_path, tcp=(Listen(*LOCAL),), http=(Listen(*LOCAL),), limits=limits)
    tcp, web = thread.ports["tcp"][0], thread.ports["http"][0]
    silent = []
    try:
        for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            for _ in range(8):  # 3 addresses fill both inputs with connections that never send
                for port in (tcp, web):
                    silent.append(socket.create_connection(("127.0.0.1", port), source_address=(address, 0),
                                                           timeout=10))
        time.sleep(1.0)
        full = thread.collector.snapshot()["inputs"]
        with socket.create_connection(("127.0.0.1", tcp), source_address=("127.0.0.5", 0), timeout=10) as sock:
            sock.sendall(octet(syslog(generic("legit-tcp"))))
        body = json.dumps(audit_event("legit-http")).encode()
        with socket.create_connection(("127.0.0.1", web), source_address=("127.0.0.6", 0), timeout=10) as sock:
            sock.sendall((f"POST /fhir/AuditEvent HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                          f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
            answer = sock.recv(100)
        final = settle(thread, 2)
    finally:
        for sock in silent:
            sock.close()
        final = thread.stop()
    assert full[f"tcp:{tcp}"]["open"] == 24 and full[f"http:{web}"]["open"] == 24, full
    assert answer.startswith(b"HTTP/1.1 202"), answer
    assert final["indexed"] == 2 and sorted(markers(cluster, pack)) == ["fhir", "legit-tcp"]
    assert final["inputs"][f"tcp:{tcp}"]["refused"]["evicted_silent"] >= 1


# ------------------------------------------------------------------ item 7: counters that add up


def test_item7_file_lines_read_again_after_kill9_are_counted_once(
        cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    total, state, port = 12_000, tmp_path / "state", free_port()
    source = tmp_path / "audit.jsonl"
    source.write_text("")
    lines = [generic(f"file-{n}") + "\n" for n in range(total)]
    first = start_process(pack.cluster.url, pack, state, port, file=source)

    def write(part: list[str]) -> None:
        with source.open("a") as handle:
            for start in range(0, len(part), 200):
                handle.write("".join(part[start:start + 200]))
                handle.flush()
                time.sleep(0.02)

    try:
        writer = threading.Thread(target=write, args=(lines[: total // 2],))
        writer.start()
        deadline = time.monotonic() + 30
        while journal_lines(state) < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)  # mid-stream: the tailer's own offset file lags behind the journal
        first.wait(10)
        writer.join()
    finally:
        if first.poll() is None:
            first.kill()
    write(lines[total // 2:])
    second = start_process(pack.cluster.url, pack, state, port, file=source)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                saved = json.loads((state / "spool" / "journal.json").read_text())["counters"]
            except FileNotFoundError:
                saved = {}  # not saved yet by this run
            if saved.get("indexed", 0) >= total:
                break
            time.sleep(0.2)
        time.sleep(1.5)  # a re-read line would be counted by now
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    snap = json.loads(out.strip().splitlines()[-1])
    assert snap["received"] == total and snap["indexed"] == total, snap
    reconciles(snap)
    seen = markers(cluster, pack)
    assert len(seen) == total and len(set(seen)) == total


def test_item7_slowloris_connections_are_not_counted_as_events(
        cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    limits = Limits(request_timeout=1.0, idle_timeout=30.0)
    thread = collector(pack, tmp_path, tcp=(Listen(*LOCAL),), http=(Listen(*LOCAL),), limits=limits)
    tcp, web = thread.ports["tcp"][0], thread.ports["http"][0]
    socks = []
    try:
        for _ in range(5):
            slow = socket.create_connection(("127.0.0.1", tcp), timeout=10)
            slow.sendall(b"500 <85>1 2026-11-27T10:00:00Z pacs01 app - - - ")  # a frame that never completes
            socks.append(slow)
            slow = socket.create_connection(("127.0.0.1", web), timeout=10)
            slow.sendall(b"POST /fhir HTTP/1.1\r\nX-Slow: 1\r\n")  # headers that never end
            socks.append(slow)
        time.sleep(2.5)
        with socket.create_connection(("127.0.0.1", tcp), timeout=10) as sock:
            sock.sendall(octet(syslog(generic("complete"))))
        snap = settle(thread, 1)
    finally:
        for sock in socks:
            sock.close()
        snap = thread.stop()
    assert snap["received"] == 1 and snap["indexed"] == 1 and snap["rejected"] == 0, snap
    assert snap["inputs"][f"tcp:{tcp}"]["refused"]["frame_timeout"] == 5
    assert snap["inputs"][f"http:{web}"]["refused"]["http_timeout"] == 5
    reconciles(snap)
