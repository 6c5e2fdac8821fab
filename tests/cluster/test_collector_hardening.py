"""Issue 9: the collector and pipelines under attack and under faults, on loopback against the real node.

One test per item of the issue, each asserting the corrected outcome a user
would see: what the node stored, what the counters say, what a sender got back.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pacsguard.collector import CollectorConfig, CollectorThread, Listen
from pacsguard.collector.failures import SEALED_SUFFIX, FailureProtector
from pacsguard.collector.limits import Limits
from pacsguard.collector.sender import SenderConfig
from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings
from pacsguard.services.failures import decrypt_failure, list_failures, replay_failure
from pydantic import SecretStr
from testnode import make_settings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tlsproxy import make_ca_and_cert

pytestmark = pytest.mark.cluster
LOCAL = ("127.0.0.1", 0)
TOKEN = "hardening-token-" + "x" * 16
KEY = secrets.token_bytes(32)
SALT = "test-salt-0123456789abcdef"  # conftest.make_settings


# ------------------------------------------------------------------ helpers


def collector(settings: Settings, state: Path, **options: Any) -> CollectorThread:
    sender = SenderConfig(flush_interval=0.1, retry_budget=2.0, batch_size=options.pop("batch_size", 200))
    if options.get("http") or options.get("https"):
        options.setdefault("http_token", SecretStr(TOKEN))
    options.setdefault("failures_key", KEY)
    config = CollectorConfig(state_dir=state, sender=sender, progress_interval=0, shutdown_timeout=20, **options)
    return CollectorThread(config, Cluster.connect(settings.cluster), settings).start()


def settle(thread: CollectorThread, received: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        snap = thread.collector.snapshot()
        if snap["received"] >= received and snap["in_flight"] == 0:
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {received} settled events: {snap}")
        time.sleep(0.05)


def reconciles(snap: dict[str, Any]) -> None:
    assert snap["received"] == sum(snap[k] for k in ("indexed", "failed", "spooled", "rejected", "in_flight")), snap


def stored(cluster: Cluster, settings: Settings) -> dict[str, list[dict[str, Any]]]:
    stream, failures = settings.index("events_data_stream"), settings.index("failures")
    cluster.request("POST", f"/{stream},{failures}/_refresh")
    out: dict[str, list[dict[str, Any]]] = {"events": [], "failures": []}
    for key, index in (("events", stream), ("failures", failures)):
        page = cluster.request("POST", f"/{index}/_search", params={"scroll": "1m"},
                               body={"size": 5000, "sort": ["_doc"]})
        while page["hits"]["hits"]:
            out[key] += page["hits"]["hits"]
            page = cluster.request("POST", "/_search/scroll", body={"scroll": "1m", "scroll_id": page["_scroll_id"]})
        cluster.request("DELETE", "/_search/scroll", body={"scroll_id": page["_scroll_id"]}, ok_missing=True)
    return out


def generic(marker: str, **extra: Any) -> str:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return json.dumps({"timestamp": now, "app": "cloudpacs", "action": "user-login", "user": "alice",
                       "source_ip": "81.2.69.142", "id": marker, **extra})


def syslog(msg: str | bytes, msgid: str = "-") -> bytes:
    body = msg.encode("utf-8") if isinstance(msg, str) else msg
    return f"<85>1 2026-11-27T10:00:00.000Z pacs01 app 1 {msgid} - ".encode() + body


def octet(frame: bytes) -> bytes:
    return f"{len(frame)} ".encode() + frame


def send_tcp(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)


def http(port: int, raw: bytes, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, Any]]:
    """Send raw HTTP bytes, return (status, JSON body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as plain:
        sock = context.wrap_socket(plain, server_hostname="127.0.0.1") if context else plain
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    status = int(head.split(b" ")[1]) if head else 0
    return status, json.loads(body or b"{}")


def post(port: int, path: str, body: bytes, token: str | None = TOKEN, extra: str = "") -> tuple[int, dict[str, Any]]:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return http(port, (f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}{extra}Content-Length: {len(body)}\r\n"
                       "Connection: close\r\n\r\n").encode() + body)


def audit_event(marker: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "AuditEvent", "id": marker,
            "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114",
                     "display": "User Authentication"},
            "subtype": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110122",
                         "display": "Login"}],
            "action": "E", "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "outcome": "0",
            "agent": [{"who": {"identifier": {"value": "alice"}}, "requestor": True,
                       "network": {"address": "81.2.69.142", "type": "2"}}],
            "source": {"observer": {"display": "pacs01"}}, **extra}


# ------------------------------------------------------------------ item 1: kill -9


class HoldingProxy:
    """A TCP forwarder to the node that can hold every byte (the collector's bulks hang mid-send)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.hold = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                while self.hold.is_set():
                    time.sleep(0.05)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_process(url: str, settings: Settings, state: Path, port: int,
                  file: Path | None = None) -> subprocess.Popen[str]:
    spec = {"url": url, "prefix": settings.id_prefix, "namespace": settings.namespace, "state": str(state),
            "tcp_port": port, "key_b64": base64.b64encode(KEY).decode(), "file": str(file) if file else None}
    env = {**os.environ, "PACSGUARD_SALT": SALT}
    process = subprocess.Popen([sys.executable, str(HERE / "collector_process.py"), json.dumps(spec)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise AssertionError(f"collector exited: {process.stderr.read() if process.stderr else ''}")
            time.sleep(0.1)
    process.kill()
    raise AssertionError("collector did not listen")


def journal_lines(state: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in (state / "spool").glob("seg-*.ndjson"))


def test_item1_kill9_mid_send_then_restart_every_event_exactly_once(
        cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    total = 20_000
    node_port = int(pack.cluster.url.rsplit(":", 1)[1])
    proxy = HoldingProxy(node_port)
    state, port = tmp_path / "state", free_port()
    first = start_process(f"http://127.0.0.1:{proxy.port}", pack, state, port)
    try:
        lines = [syslog(generic(f"k-{n}")) + b"\n" for n in range(total)]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"".join(lines[: total // 2]))
            time.sleep(0.5)  # let some bulks land
            proxy.hold.set()  # from here the collector's bulk requests hang mid-send
            sock.sendall(b"".join(lines[total // 2:]))
        deadline = time.monotonic() + 60
        while journal_lines(state) < total and time.monotonic() < deadline:
            time.sleep(0.1)
        assert journal_lines(state) == total  # every frame read is on disk before the collector reads on
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        proxy.close()
    stream = pack.index("events_data_stream")
    cluster.request("POST", f"/{stream}/_refresh")
    before = cluster.request("GET", f"/{stream}/_count")["count"]
    assert before < total  # the kill did cut the sending short

    second = start_process(pack.cluster.url, pack, state, port)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            saved = json.loads((state / "spool" / "journal.json").read_text())["counters"]
            if saved.get("indexed", 0) + saved.get("failed", 0) >= total:
                break
            time.sleep(0.2)
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    snap = json.loads(out.strip().splitlines()[-1])
    # The counters carried over the kill: every event received once, settled once.
    assert snap["received"] == total and snap["indexed"] == total and snap["failed"] == 0, snap
    assert snap["runs"] == 2 and snap["resumed"] > 0
    reconciles(snap)
    markers = [h["_source"]["event"]["id"] for h in stored(cluster, pack)["events"]]
    assert len(markers) == total and set(markers) == {f"k-{n}" for n in range(total)}  # all, exactly once


# ------------------------------------------------------------------ item 2: UDP kernel drops


def test_item2_udp_kernel_drops_are_read_from_the_kernel_and_shown_in_health(
        cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    thread = collector(pack, tmp_path, udp=(Listen(*LOCAL),), http=(Listen(*LOCAL),), udp_receive_buffer=4096)
    sent = 3000
    try:
        udp_port = thread.ports["udp"][0]
        blocked = threading.Event()

        def block_the_loop() -> None:
            blocked.set()
            time.sleep(1.5)  # the loop reads nothing meanwhile: the kernel buffer overflows

        runner = threading.Thread(target=lambda: thread.call(block_the_loop))
        runner.start()
        blocked.wait(5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for n in range(sent):
                sock.sendto(syslog(generic(f"u-{n}")), ("127.0.0.1", udp_port))
        runner.join()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snap = thread.collector.snapshot()
            if snap["received"] + snap["udp_kernel_drops"] >= sent and snap["in_flight"] == 0:
                break
            time.sleep(0.1)
        status, health = http(thread.ports["http"][0], f"GET /health HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                                                       "Connection: close\r\n\r\n".encode())
    finally:
        final = thread.stop()
    assert status == 200
    assert health["udp_kernel_drops"] > 0  # the loss is visible where operators look
    assert health["udp_receive_buffer_bytes"][0] >= 4096
    # Every datagram is accounted for: received, or dropped by the kernel and counted.
    assert final["received_by_source"]["udp"] + final["udp_kernel_drops"] == sent, final
    reconciles(final)


# ------------------------------------------------------------------ item 3: framing resync


def test_item3_framing_resynchronises_instead_of_swallowing(cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    def line(marker: str) -> bytes:
        return syslog(generic(marker))

    valid = [octet(line(f"v-{n}")) for n in range(3)]
    # UTF-8 payloads: their character count is smaller than their byte count
    chars = [syslog(generic(f"c-{n}").replace('"app"', '"note": "café naïve ü", "app"')) for n in range(3)]
    assert all(len(c) > len(c.decode()) for c in chars)
    probes = b"".join([
        b"5000 " + line("short"),  # a count larger than its payload
        *valid,  # must not be swallowed by it
        b"999999999 " + line("absurd"),  # an absurd count
        b"\n" + line("after-absurd") + b"\n",  # the valid line after it
        b"42 items were exported by " + line("digits")[:0] + b"alice\n",  # text starting with digits: one line
        # counts in characters, as `printf '%d %s' "${#f}"` gives in a UTF-8 shell
        *(f"{len(c.decode())} ".encode() + c for c in chars),
        octet(line("last")),
    ])
    thread = collector(pack, tmp_path, tcp=(Listen(*LOCAL),))
    try:
        send_tcp(thread.ports["tcp"][0], probes)
        snap = settle(thread, 10)
    finally:
        snap = thread.stop()
    docs = stored(cluster, pack)
    markers = sorted(h["_source"]["event"]["id"] for h in docs["events"])
    assert markers == sorted(["short", "v-0", "v-1", "v-2", "after-absurd", "c-0", "c-1", "c-2", "last"])
    assert snap["received"] == 11  # 9 events, the text line (kept in the failure index), the absurd frame
    assert snap["rejected_by_reason"] == {"oversize": 1}  # the absurd count's own frame, counted
    assert snap["framing_errors"] >= 5
    assert len(docs["failures"]) == 2  # the text line, and its sealed original
    reconciles(snap)


# ------------------------------------------------------------------ item 4: TLS without close_notify


def test_item4_tls_close_without_close_notify_keeps_every_frame(
        cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path)
    thread = collector(pack, tmp_path / "state", tls=(Listen(*LOCAL),), tls_cert=cert, tls_key=key)
    try:
        context = ssl.create_default_context(cafile=str(ca))
        raw = socket.create_connection(("127.0.0.1", thread.ports["tls"][0]), timeout=10)
        tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(b"".join(octet(syslog(generic(f"t-{n}"))) for n in range(3)))
        # Close the TCP connection under TLS: no close_notify, as many syslog clients do.
        raw_fd = socket.socket(fileno=os.dup(tls.fileno()))
        raw_fd.shutdown(socket.SHUT_RDWR)
        raw_fd.close()
        tls.close()
        snap = settle(thread, 3)
    finally:
        snap = thread.stop()
    assert snap["indexed"] == 3, snap
    assert sorted(h["_source"]["event"]["id"] for h in stored(cluster, pack)["events"]) == ["t-0", "t-1", "t-2"]


# ------------------------------------------------------------------ item 5: HTTP answers


def test_item5_every_http_request_is_answered_and_counted(cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    thread = collector(pack, tmp_path, http=(Listen(*LOCAL),))
    try:
        port = thread.ports["http"][0]
        body = json.dumps(audit_event("chunked-1")).encode()
        chunked = (f"POST /fhir/AuditEvent HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                   "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
        chunked += f"{len(body[:50]):x}\r\n".encode() + body[:50] + b"\r\n"
        chunked += f"{len(body[50:]):x}\r\n".encode() + body[50:] + b"\r\n0\r\n\r\n"
        answers = {
            "chunked": http(port, chunked),
            "negative": http(port, (f"POST /fhir HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                                    "Content-Length: -1\r\nConnection: close\r\n\r\n").encode()),
            "deep": post(port, "/fhir", b"[" * 100_000 + b"]" * 100_000),
            "no_length": http(port, (f"POST /fhir HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                                     "Connection: close\r\n\r\n").encode()),
        }
        snap = settle(thread, 4)
    finally:
        snap = thread.stop()
    assert {k: v[0] for k, v in answers.items()} == {"chunked": 202, "negative": 400, "deep": 400, "no_length": 411}
    assert "nested deeper" in answers["deep"][1]["issue"][0]["diagnostics"]
    assert snap["indexed"] == 1
    assert snap["rejected_by_reason"] == {"http_malformed": 1, "json_too_deep": 1, "http_length_required": 1}
    reconciles(snap)


# ------------------------------------------------------------------ item 6: authentication


def test_item6_fhir_endpoint_and_health_need_a_token_and_bind_loopback(
        cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    assert Listen.parse("8080").host == "127.0.0.1"  # a bare port is loopback only
    with pytest.raises(PacsguardError, match="needs sender authentication"):
        CollectorConfig(state_dir=tmp_path, http=(Listen(*LOCAL),)).validate()
    thread = collector(pack, tmp_path, http=(Listen(*LOCAL),))
    try:
        port = thread.ports["http"][0]
        forged = json.dumps(audit_event("forged-root", agent=[{"who": {"identifier": {"value": "root"}},
                                                               "requestor": True}])).encode()
        anonymous = post(port, "/fhir/AuditEvent", forged, token=None)
        wrong = post(port, "/fhir/AuditEvent", forged, token="guess")
        health_anonymous = http(port, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
        good = post(port, "/fhir/AuditEvent", json.dumps(audit_event("signed-in")).encode())
        health = http(port, f"GET /health HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
                      .encode())
        snap = settle(thread, 4)
    finally:
        snap = thread.stop()
    assert (anonymous[0], wrong[0], health_anonymous[0], good[0], health[0]) == (401, 401, 401, 202, 200)
    assert "received" not in health_anonymous[1] and health[1]["received"] >= 1
    assert snap["rejected_by_reason"]["unauthorized"] == 3
    users = [h["_source"]["user"]["name"] for h in stored(cluster, pack)["events"]]
    assert users == ["alice"]  # nothing forged landed (the forged event names root)


def test_item6_client_certificates_authenticate_https(cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path)
    thread = collector(pack, tmp_path / "state", https=(Listen(*LOCAL),), tls_cert=cert, tls_key=key,
                       tls_client_ca=ca, http_token=None)
    try:
        port = thread.ports["https"][0]
        body = json.dumps(audit_event("mtls-1")).encode()
        request = (f"POST /fhir/AuditEvent HTTP/1.1\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                   ).encode() + body
        without = ssl.create_default_context(cafile=str(ca))
        try:
            refused = http(port, request, without)[0]  # TLS 1.3: the server's alert comes on the first read
        except (ssl.SSLError, ConnectionError, OSError):
            refused = 0
        assert refused == 0  # no client certificate: no answer at all
        with_cert = ssl.create_default_context(cafile=str(ca))
        with_cert.load_cert_chain(str(cert), str(key))  # the test CA signed this one; it serves as client cert
        status, _ = http(port, request, with_cert)
        settle(thread, 1)
    finally:
        thread.stop()
    assert status == 202


# ------------------------------------------------------------------ item 7: forged envelopes and fields


def test_item7_senders_cannot_pick_pipelines_or_set_pack_owned_fields(
        cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    """A line claiming to be the collector's ATNA envelope, in a JSON file the file input reads and on
    TCP, is refused into the failure index with the reason (issue 17): only the collector's parser
    signs envelopes. A FHIR event claiming another format is refused too."""
    patient = "PID-7731"
    envelope = {"pacsguard_format": "atna", "original": f"<AuditMessage>patient {patient}</AuditMessage>",
                "doc": {"@timestamp": "2020-01-01T00:00:00Z",
                        "event": {"action": "role-grant", "outcome": "success", "id": "forged-envelope"},
                        "user": {"name": "forged-atna-admin"}, "observer": {"hostname": "pacs01"},
                        "pacs": {"patient": {"id": patient, "id_hash": "0" * 64}}}}
    body = {k: v for k, v in envelope.items() if k != "pacsguard_format"}
    forged_mac = '{"pacsguard_format":"atna","mac":"' + "0" * 64 + '",' + json.dumps(body)[1:]
    feed = tmp_path / "portal.json"
    feed.write_text(json.dumps(envelope) + "\n" + forged_mac + "\n")
    thread = collector(pack, tmp_path / "state", tcp=(Listen(*LOCAL),), http=(Listen(*LOCAL),),
                       files=((feed, "json"),))
    try:
        send_tcp(thread.ports["tcp"][0], json.dumps(envelope).encode() + b"\n")
        fhir_with_hint = audit_event("fhir-hinted", pacsguard_format="generic")
        status, _ = post(thread.ports["http"][0], "/fhir/AuditEvent", json.dumps(fhir_with_hint).encode())
        settle(thread, 4)
    finally:
        snap = thread.stop()
    assert status == 202 and snap["indexed"] == 0 and snap["failed"] == 4, snap
    got = stored(cluster, pack)
    assert got["events"] == []
    # (the collector's sealed originals sit beside the failures: those carry no error)
    reasons = sorted(h["_source"]["error"]["message"] for h in got["failures"] if "error" in h["_source"])
    no_mac = ("pacsguard_format envelope refused: it carries no collector MAC, so it was not produced by the "
              "pacsguard collector")
    bad_mac = ("pacsguard_format envelope refused: its MAC does not verify, so it was not produced by this "
               "installation's pacsguard collector")
    assert reasons == ["event claims pacsguard_format [generic] but reads as [fhir]: refused", no_mac, no_mac,
                       bad_mac], reasons
    assert patient not in json.dumps(got["failures"])


# ------------------------------------------------------------------ item 8: field explosion


def test_item8_generic_user_keys_cannot_fill_the_field_limit(cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    lines = [syslog(generic(f"f-{n}", user={"name": "alice", **{f"k{n}_{i}": "v" for i in range(50)}})) + b"\n"
             for n in range(60)]
    lines.append(syslog(generic("legit-after", department="radiology")) + b"\n")
    thread = collector(pack, tmp_path, tcp=(Listen(*LOCAL),))
    try:
        send_tcp(thread.ports["tcp"][0], b"".join(lines))
        snap = settle(thread, 61)
    finally:
        snap = thread.stop()
    assert snap["indexed"] == 61 and snap["failed"] == 0, snap
    mapping = cluster.request("GET", f"/{pack.index('events_data_stream')}/_mapping")
    user_fields = next(iter(mapping.values()))["mappings"]["properties"]["user"]["properties"]
    assert set(user_fields) <= {"name", "id", "domain", "email", "roles", "target", "changes"}


# ------------------------------------------------------------------ item 9: a Bundle flood


def test_item9_a_huge_bundle_is_refused_whole_without_writing(cluster: Cluster, pack: Settings,
                                                              tmp_path: Path) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "AuditEvent"}} for _ in range(100_000)]}
    small = {"resourceType": "Bundle", "type": "collection",
             "entry": [{"resource": {"resourceType": "AuditEvent"}} for _ in range(3)]}
    thread = collector(pack, tmp_path, http=(Listen(*LOCAL),))
    try:
        big_answer = post(thread.ports["http"][0], "/fhir", json.dumps(bundle).encode())
        empty_answer = post(thread.ports["http"][0], "/fhir", json.dumps(small).encode())
        snap = settle(thread, 100_003)
    finally:
        snap = thread.stop()
    assert big_answer[0] == 413 and big_answer[1]["rejected"] == 100_000
    assert empty_answer[0] == 400 and "recorded" in empty_answer[1]["issue"][0]["diagnostics"]
    assert snap["rejected_by_reason"] == {"bundle_too_large": 100_000, "invalid_auditevent": 3}
    docs = stored(cluster, pack)
    assert docs["failures"] == [] and docs["events"] == []


# ------------------------------------------------------------------ item 10: limits


def test_item10_connection_time_and_buffer_limits(cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    limits = Limits(max_connections=50, max_connections_per_address=5, idle_timeout=1.0, request_timeout=1.5,
                    max_buffered_bytes=2 * 1024 * 1024)
    thread = collector(pack, tmp_path, tcp=(Listen(*LOCAL),), http=(Listen(*LOCAL),), limits=limits)
    try:
        tcp, web = thread.ports["tcp"][0], thread.ports["http"][0]
        # 8 slow senders from one address, each holding a 600 KB partial frame.
        socks = [socket.create_connection(("127.0.0.1", tcp), timeout=10) for _ in range(8)]
        for sock in socks:
            try:
                sock.sendall(b"900000 <85>1 - - - - - " + b"p" * 600_000)
            except OSError:
                pass
        time.sleep(0.3)
        peak = thread.collector.snapshot()["inputs"][f"tcp:{tcp}"]
        closed = 0
        for sock in socks:
            sock.settimeout(10)
            try:
                closed += sock.recv(1) == b""  # the collector closed it (limit, budget or timeout)
            except OSError:
                closed += 1
            sock.close()
        # HTTP: header lines trickled one by one do not extend the request deadline.
        with socket.create_connection(("127.0.0.1", web), timeout=20) as slow:
            slow.sendall(b"POST /fhir HTTP/1.1\r\n")
            started = time.monotonic()
            answer = b""
            try:
                for n in range(20):
                    slow.sendall(f"X-Slow-{n}: 1\r\n".encode())
                    time.sleep(0.25)
            except OSError:
                pass
            answer = slow.recv(200)
            waited = time.monotonic() - started
        snap = thread.collector.snapshot()
    finally:
        thread.stop()
    assert peak["open"] <= 5 and peak["buffered_bytes"] <= limits.max_buffered_bytes
    assert snap["inputs"][f"tcp:{tcp}"]["refused"]["too_many_connections_from_address"] == 3
    assert closed == 8  # every slow sender was cut off, none could hold memory
    assert answer.startswith(b"HTTP/1.1 408") and waited < 5 * limits.request_timeout
    # A request that never completed is a fact of the input, not an event (issue 16, item 7).
    assert snap["inputs"][f"http:{web}"]["refused"]["http_timeout"] == 1
    assert "http_timeout" not in snap["rejected_by_reason"]


# ------------------------------------------------------------------ item 11: PHI


def test_item11_failures_keep_no_raw_patient_id_and_the_sealed_original_opens(
        cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    patient, name = "PID-55512", "DOE^JANE"
    xml = (f'<?xml version="1.0"?><AuditMessage><EventIdentification EventActionCode="R" '
           f'EventOutcomeIndicator="0"><EventID csd-code="110110" codeSystemName="DCM" originalText="Patient '
           f'Record"/></EventIdentification><ParticipantObjectIdentification ParticipantObjectID="{patient}" '
           f'ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"><ParticipantObjectIDTypeCode '
           f'csd-code="2"/><ParticipantObjectName>{name}</ParticipantObjectName>'
           f'</ParticipantObjectIdentification></AuditMessage>')
    rfc3164 = f"<85>Nov 27 10:00:00 pacs01 dcm4chee: {xml}".encode()
    text_before = syslog(f"note {xml}", msgid="APP")
    desync = b"7 <85>1 x" + f" patient={patient} name={name}".encode()
    thread = collector(pack, tmp_path, tcp=(Listen(*LOCAL),))
    try:
        send_tcp(thread.ports["tcp"][0], rfc3164 + b"\n" + text_before + b"\n" + desync + b"\n")
        snap = settle(thread, 3)
    finally:
        snap = thread.stop()
    docs = stored(cluster, pack)
    everything = json.dumps(docs)
    assert patient not in everything and "JANE" not in everything  # in no index, in no field
    failures = [h for h in docs["failures"] if not h["_id"].endswith(SEALED_SUFFIX)]
    sealed = {h["_id"].removesuffix(SEALED_SUFFIX): h["_source"] for h in docs["failures"]
              if h["_id"].endswith(SEALED_SUFFIX)}
    assert snap["failed"] == len(failures) >= 2 and set(sealed) == {h["_id"] for h in failures}
    protector = FailureProtector(KEY)
    opened = [protector.unseal(i, s["event"]["sealed"]) for i, s in sealed.items()]
    assert any(patient in o for o in opened)  # the reviewer with the key gets the original back
    for hit in failures:
        assert hit["_source"]["event"]["original_sha256"] == sealed[hit["_id"]]["event"]["original_sha256"]
    with pytest.raises(PacsguardError, match="does not open"):
        FailureProtector(secrets.token_bytes(32)).unseal(failures[0]["_id"], sealed[failures[0]["_id"]]["event"]["sealed"])

    # `pacsguard failures`: the reviewer lists, decrypts, fixes and replays.
    listed = list_failures(cluster, pack)
    assert {r["id"] for r in listed} == {h["_id"] for h in failures} and all(r["sealed"] for r in listed)
    target = next(r["id"] for r in listed if patient in decrypt_failure(cluster, pack, r["id"], KEY))
    again = replay_failure(cluster, pack, target, decrypt_failure(cluster, pack, target, KEY))
    assert again["landed"] == "failures" and again["id"] == f"{target}-replay-1"  # as it was: fails again
    fixed = replay_failure(cluster, pack, target, generic("fixed-by-reviewer"))
    assert fixed["landed"] == "events" and fixed["id"] == f"{target}-replay-2"
    assert patient not in json.dumps(stored(cluster, pack))  # the replayed failure keeps no raw id either


def test_item11_a_fhir_event_without_recorded_is_refused_at_the_door(
        cluster: Cluster, pack: Settings, tmp_path: Path) -> None:
    event = audit_event("no-recorded", entity=[{"what": {"identifier": {"value": "PID-8812"}}, "type": {"code": "1"},
                                                "role": {"code": "1"}}])
    del event["recorded"]
    thread = collector(pack, tmp_path, http=(Listen(*LOCAL),))
    try:
        status, answer = post(thread.ports["http"][0], "/fhir/AuditEvent", json.dumps(event).encode())
        settle(thread, 1)
    finally:
        thread.stop()
    assert status == 400 and "recorded" in answer["issue"][0]["diagnostics"]
    assert "PID-8812" not in json.dumps(stored(cluster, pack))


def test_make_settings_salt_matches(cluster_url: str) -> None:
    """The salt these tests hash with is the one conftest installs with."""
    assert make_settings(cluster_url, "x", "y").pseudonymization.salt.get_secret_value() == SALT  # type: ignore[union-attr]
