"""Two `pacsguard collect` processes behind one nginx (docs/collector.md, "Several collectors behind
one address"), with real software only: the test node, Debian's nginx with its stream module
(installed as root by devnode/nginx.py, else these tests skip), collectors started through the CLI.

FHIR over HTTP goes through an nginx `upstream`, syslog over TCP through `stream` with the PROXY
protocol. Each event carries a marker of its own (generic JSON `id` -> event.id, FHIR agent
identifier -> user.id), so "landed exactly once" is read from the data stream, marker by marker.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsguard.collector.failures import key_id
from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings
from pacsguard.devnode import nginx
from pacsguard.devnode.keycloak import free_port
from testnode import TEST_ENVELOPE_KEY, TEST_SALT, installed_pack

pytestmark = pytest.mark.cluster
TOKEN = "balancer-test-token-0123456789"
FAILURES_KEY = base64.b64encode(bytes(range(32))).decode()
FHIR = Path(__file__).resolve().parents[2] / "pipelines" / "fhir" / "_dev" / "test" / "pipeline" / "login.json"


@pytest.fixture(scope="module")
def stream_module() -> None:
    try:
        nginx.install_packages(nginx.STREAM_PACKAGES)  # what is missing, as root
    except PacsguardError as exc:
        pytest.skip(f"cannot install nginx with its stream module: {exc}")


@pytest.fixture(scope="module")
def settings(cluster_url: str, stream_module: None) -> Iterator[Settings]:
    """One pack for the module; every test marks its events with a prefix of its own."""
    with installed_pack(cluster_url, "pgtlb", f"lb{os.getpid()}") as settings:
        yield settings


class Instance:
    """One `pacsguard collect` process with --http and --tcp on ports of its own."""

    def __init__(self, name: str, settings: Settings, tmp: Path, *extra: str, state: Path | None = None) -> None:
        self.name = name
        self.http_port, self.tcp_port = free_port(), free_port()
        self.state = state or tmp / f"state-{name}"
        self.log = tmp / f"collector-{name}.log"
        user_settings = tmp / "settings.json"
        user_settings.write_text(json.dumps({"id_prefix": settings.id_prefix, "namespace": settings.namespace}))
        self.base = [sys.executable, "-m", "pacsguard.cli", "--url", settings.cluster.url, "--settings",
                     str(user_settings), "collect", "--http", f"127.0.0.1:{self.http_port}",
                     "--tcp", f"127.0.0.1:{self.tcp_port}", "--state-dir", str(self.state),
                     "--instance-name", name, "--proxy-from", "127.0.0.1", "--progress-interval", "0"]
        self.env = {**os.environ, "PACSGUARD_COLLECTOR_TOKEN": TOKEN, "PACSGUARD_FAILURES_KEY": FAILURES_KEY,
                    "PACSGUARD_SALT": TEST_SALT, "PACSGUARD_ENVELOPE_KEY": TEST_ENVELOPE_KEY}
        self.proc: subprocess.Popen[bytes] | None = None
        self.start(*extra)

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def tcp(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    def start(self, *extra: str, wait: bool = True) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*self.base, *extra], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while wait and get(f"http://{self.http}/ready")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"collector {self.name} did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def health(self) -> dict[str, Any]:
        status, body = get(f"http://{self.http}/health", TOKEN)
        assert status == 200, body
        return body

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start(settings: Settings, tmp_path: Path) -> Iterator[Any]:
    """start.collector(name, *options) and start.balancer(collectors): stopped at the end of the test."""
    collectors: list[Instance] = []
    runs: list[Path] = []

    class Start:
        @staticmethod
        def collector(name: str, *extra: str, state: Path | None = None) -> Instance:
            instance = Instance(name, settings, tmp_path, *extra, state=state)
            collectors.append(instance)
            return instance

        @staticmethod
        def balancer(instances: list[Instance]) -> nginx.BalancerState:
            run = tmp_path / "nginx"
            runs.append(run)
            return nginx.balancer_up(run, free_port(), [i.http for i in instances], free_port(),
                                     [i.tcp for i in instances],
                                     parents=(tmp_path, *list(tmp_path.parents)[:2]))

    yield Start()
    for run in runs:
        nginx.balancer_down(run)
    for instance in collectors:
        instance.stop()


def get(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


def post(url: str, body: bytes, key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {TOKEN}"}
    if key:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(f"{url}/fhir/AuditEvent", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except OSError:  # reset, refused: the sender retries
        return 0, {}


def audit_event(marker: str) -> bytes:
    """The FHIR login example, its user replaced by the marker (-> user.id)."""
    event = json.loads(FHIR.read_text())
    event["agent"][0]["who"]["identifier"]["value"] = marker
    return json.dumps(event).encode()


def syslog_frame(marker: str) -> bytes:
    """A generic JSON event (its id -> event.id) in an RFC 5424 frame, octet-counted."""
    event = {"timestamp": "2026-11-27T10:00:00Z", "app": "cloudpacs", "action": "user-login", "user": "alice",
             "source_ip": "81.2.69.142", "id": marker}
    frame = f"<85>1 2026-11-27T10:00:00.000Z pacs01 app 1 - - {json.dumps(event)}".encode()
    return f"{len(frame)} ".encode() + frame


def send_syslog(port: int, frames: list[bytes], source: str = "127.0.0.1") -> socket.socket:
    """One TCP connection from `source` (a loopback address of its own) to `port`, the frames sent; left open."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"".join(frames))
    return sock


def landed(settings: Settings, field: str, prefix: str) -> dict[str, int]:
    """How many documents of the data stream hold each marker starting with `prefix`."""
    cluster = Cluster.connect(settings.cluster)
    stream = settings.index("events_data_stream")
    cluster.request("POST", f"/{stream}/_refresh", ok_missing=True)
    body = {"size": 0, "query": {"prefix": {field: prefix}},
            "aggs": {"m": {"terms": {"field": field, "size": 10000}}}}
    answer = cluster.request("POST", f"/{stream}/_search", body=body, ok_missing=True) or {}
    return {b["key"]: b["doc_count"] for b in answer.get("aggregations", {}).get("m", {}).get("buckets", [])}


def wait_landed(settings: Settings, field: str, prefix: str, want: int, timeout: float = 90) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        got = landed(settings, field, prefix)
        if sum(got.values()) >= want or time.monotonic() > deadline:
            time.sleep(1.5)  # anything still arriving would be a duplicate: let it come
            return landed(settings, field, prefix)
        time.sleep(0.5)


def source_ips(settings: Settings, prefix: str) -> set[str]:
    cluster = Cluster.connect(settings.cluster)
    body = {"size": 0, "query": {"prefix": {"event.id": prefix}}, "aggs": {"ip": {"terms": {"field": "source.ip"}}}}
    answer = cluster.request("POST", f"/{settings.index('events_data_stream')}/_search", body=body)
    return {b["key"] for b in answer["aggregations"]["ip"]["buckets"]}


def test_two_instances_share_http_and_syslog_and_each_event_lands_once(settings: Settings, start: Any) -> None:
    a, b = start.collector("a"), start.collector("b")
    front = start.balancer([a, b])
    fhir = [f"share-fhir-{n}" for n in range(120)]
    for marker in fhir:
        assert post(front.http_url, audit_event(marker))[0] == 202
    frames = [f"share-sys-{n}" for n in range(160)]
    for conn in range(8):  # nginx stream balances connections: eight of them, 20 frames each
        send_syslog(front.tcp_port, [syslog_frame(m) for m in frames[conn * 20:(conn + 1) * 20]]).close()

    assert wait_landed(settings, "user.id", "share-fhir-", len(fhir)) == dict.fromkeys(fhir, 1)
    assert wait_landed(settings, "event.id", "share-sys-", len(frames)) == dict.fromkeys(frames, 1)
    # what the collectors record of a sender is what the event says, never nginx's address
    assert source_ips(settings, "share-sys-") == {"81.2.69.142"}
    health = {i.name: i.health() for i in (a, b)}
    by_source = {name: h["received_by_source"] for name, h in health.items()}
    assert all(s.get("http", 0) > 0 and s.get("tcp", 0) > 0 for s in by_source.values()), by_source
    assert sum(s["http"] for s in by_source.values()) == len(fhir)
    assert sum(s["tcp"] for s in by_source.values()) == len(frames)
    assert {name: h["instance"]["name"] for name, h in health.items()} == {"a": "a", "b": "b"}
    print(f"received by source: {by_source}")


def test_kill_one_instance_mid_stream_every_event_lands_once(settings: Settings, start: Any) -> None:
    # a holds what it takes in its journal for 30 s, so the kill leaves a journal to replay
    a = start.collector("a", "--flush-interval", "30", "--batch-size", "100000")
    b = start.collector("b", "--flush-interval", "0.2")
    front = start.balancer([a, b])
    markers = [f"kill-{n}" for n in range(240)]
    sent: list[str] = []
    retries = [0]

    def sender(mine: list[str]) -> None:
        """A FHIR sender: each request with its Idempotency-Key, sent until it gets a 202."""
        for marker in mine:
            deadline = time.monotonic() + 60
            while post(front.http_url, audit_event(marker), key=f"key-{marker}")[0] != 202:
                assert time.monotonic() < deadline, f"{marker} not accepted within 60 s"
                retries[0] += 1
                time.sleep(0.1)
            sent.append(marker)

    # four senders at once, so requests are on their way to a when it dies
    threads = [threading.Thread(target=sender, args=(markers[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    while len(sent) < 80 and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    held = a.health()["in_flight"]
    a.kill()
    for thread in threads:
        thread.join(180)
    assert sorted(sent) == sorted(markers)
    assert held > 0, "the killed instance held nothing in its journal: the test would not see a replay"
    after_kill = landed(settings, "user.id", "kill-")
    assert all(count == 1 for count in after_kill.values()), after_kill
    assert len(after_kill) < len(markers), "a's journal should still hold events until it restarts"

    a.start("--flush-interval", "0.2")  # the same state directory: its journal is replayed
    assert wait_landed(settings, "user.id", "kill-", len(markers)) == dict.fromkeys(markers, 1)
    restarted = a.health()
    assert restarted["resumed"] >= held, restarted
    assert restarted["in_flight"] == 0
    print(f"a held {held} at the kill, resumed {restarted['resumed']}; the sender retried {retries[0]} times; "
          f"b received {b.health()['received']}")


def test_a_retry_to_the_other_instance_with_the_same_idempotency_key_lands_once(
        settings: Settings, start: Any) -> None:
    a, b = start.collector("a"), start.collector("b")
    body = audit_event("retry-keyed")
    first, second = post(f"http://{a.http}", body, key="req-1"), post(f"http://{b.http}", body, key="req-1")
    assert first[0] == second[0] == 202 and first[1]["ids"] == second[1]["ids"]
    assert post(f"http://{a.http}", body, key="not a token")[0] == 400  # 1-255 visible ASCII characters
    # without a key two sends are two events (a device may send the same message twice)
    post(f"http://{a.http}", audit_event("retry-unkeyed"))
    post(f"http://{b.http}", audit_event("retry-unkeyed"))
    assert wait_landed(settings, "user.id", "retry-", 3) == {"retry-keyed": 1, "retry-unkeyed": 2}


def test_proxy_protocol_counts_each_sender_not_the_balancer(settings: Settings, start: Any) -> None:
    a = start.collector("a", "--max-connections-per-address", "1")
    b = start.collector("b", "--max-connections-per-address", "1")
    front = start.balancer([a, b])
    # four senders, one connection each, all held open: nginx is one address, the senders are four
    held = [send_syslog(front.tcp_port, [syslog_frame(f"pp-distinct-{n}")], f"127.0.0.{n + 2}") for n in range(4)]
    assert wait_landed(settings, "event.id", "pp-distinct-", 4) == {f"pp-distinct-{n}": 1 for n in range(4)}
    refused = sum(i.health()["inputs"][f"tcp:{i.tcp_port}"]["refused"].get("too_many_connections_from_address", 0)
                  for i in (a, b))
    assert refused == 0
    # four connections of ONE sender: each instance lets one in, so at least two are refused
    held += [send_syslog(front.tcp_port, [syslog_frame(f"pp-same-{n}")], "127.0.0.9") for n in range(4)]
    deadline = time.monotonic() + 20
    while refused < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        refused = sum(i.health()["inputs"][f"tcp:{i.tcp_port}"]["refused"].get(
            "too_many_connections_from_address", 0) for i in (a, b))
    assert refused >= 2
    # the balancer's address without a PROXY header (someone on its host): refused, its frame not taken
    direct = send_syslog(a.tcp_port, [syslog_frame("pp-direct")])
    time.sleep(1)
    assert a.health()["inputs"][f"tcp:{a.tcp_port}"]["refused"].get("proxy_header", 0) == 1
    assert landed(settings, "event.id", "pp-direct") == {}
    for sock in [*held, direct]:
        sock.close()


def test_what_instances_share_and_what_they_must_not(settings: Settings, start: Any, tmp_path: Path) -> None:
    a, b = start.collector("a"), start.collector("b")
    ha, hb = a.health(), b.health()
    # the same keys on every instance, named by ids that do not reveal them
    assert ha["instance"]["failures_key_id"] == hb["instance"]["failures_key_id"] == key_id(bytes(range(32)))
    assert ha["instance"]["envelope_key_id"] == hb["instance"]["envelope_key_id"]
    assert ha["instance"]["pid"] != hb["instance"]["pid"]
    # the balancer's check needs no token and learns nothing else; /health needs it
    assert get(f"http://{a.http}/ready") == (200, {"ready": True})
    assert get(f"http://{a.http}/health")[0] == 401
    # a journal belongs to one instance: a second one on a's state directory refuses to start
    third = subprocess.run([*a.base[:a.base.index("--http")], "--http", f"127.0.0.1:{free_port()}",
                            "--state-dir", str(a.state)], env=a.env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert third.returncode != 0
    assert f"the state directory {a.state} is in use by another collector (pid {a.proc.pid})" in third.stderr
    assert a.health()["instance"]["pid"] == a.proc.pid  # a goes on
