"""Several collectors behind one address, the parts without a cluster: the PROXY protocol header,
which addresses are balancers, ids of retried HTTP requests, the documented nginx configuration."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pacsguard.collector.connections import parse_proxy_v1
from pacsguard.collector.events import NetworkIds, idempotent_ids
from pacsguard.collector.limits import Gate, Limits, Ticket
from pacsguard.collector.service import parse_networks
from pacsguard.core.errors import PacsguardError
from pacsguard.devnode import nginx

DOC = Path(__file__).resolve().parents[2] / "docs" / "collector.md"


def test_proxy_v1_header_names_the_sender() -> None:
    assert parse_proxy_v1(b"PROXY TCP4 192.0.2.7 10.0.0.11 51234 601\r\n") == ("192.0.2.7", 51234)
    assert parse_proxy_v1(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 601\r\n") == ("2001:db8::7", 4000)
    assert parse_proxy_v1(b"PROXY UNKNOWN\r\n") is None


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.7 10.0.0.11 51234 601\n",  # LF only
    b"PROXY TCP4 2001:db8::7 10.0.0.11 1 2\r\n",  # a v6 address under TCP4
    b"PROXY TCP4 192.0.2.7 10.0.0.11 70000 601\r\n",  # port out of range
    b"PROXY TCP4 192.0.2.7 10.0.0.11 -1 601\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.11 1\r\n",  # a field short
    b"PROXY UDP4 192.0.2.7 10.0.0.11 1 2\r\n",
    b"PROXY TCP4 not-an-ip 10.0.0.11 1 2\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.11 1 2 " + b"x" * 100 + b"\r\n",  # above 107 bytes
    b"PROXY \xff\r\n",
    b"123 <85>1 2026-11-27T10:00:00Z h a 1 - - x",  # a syslog frame, no header
])
def test_malformed_proxy_headers_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_proxy_v1(line)


def test_balancer_addresses_are_not_held_to_the_per_address_limit() -> None:
    limits = Limits(max_connections_per_address=1, proxies=parse_networks(["10.0.0.5", "fd00::/64"]))
    assert limits.trusts("10.0.0.5") and limits.trusts("fd00::9")
    assert not limits.trusts("10.0.0.6") and not limits.trusts("not an address")
    gate = Gate(limits)
    assert isinstance(gate.admit("192.0.2.7"), Ticket)
    assert gate.admit("192.0.2.7") == "too_many_connections_from_address"
    assert all(isinstance(gate.admit("10.0.0.5", capped=False), Ticket) for _ in range(3))
    with pytest.raises(PacsguardError, match="bad --proxy-from"):
        parse_networks(["10.0.0.300"])
    assert parse_networks(["10.0.0.7/24"]) == (ipaddress.ip_network("10.0.0.0/24"),)


def test_a_retried_request_gets_the_same_ids_on_any_instance() -> None:
    body = b'{"resourceType": "Bundle", "entry": []}'
    assert idempotent_ids("k1", body, 2) == idempotent_ids("k1", body, 2)  # what a second instance computes
    assert len(set(idempotent_ids("k1", body, 2))) == 2
    assert idempotent_ids("k1", body + b" ", 1) != idempotent_ids("k1", body, 1)  # reused key, other body
    assert idempotent_ids("k2", body, 1) != idempotent_ids("k1", body, 1)
    # without a key every instance (and run) draws its own ids: never the same id for two events
    a, b = NetworkIds(), NetworkIds()
    assert a.run_id != b.run_id and a.next("http") != b.next("http")


def test_the_documented_nginx_configuration_is_the_one_the_test_runs() -> None:
    text = DOC.read_text()
    assert nginx.balancer_http(8088, ["10.0.0.11:8088", "10.0.0.12:8088"], host="0.0.0.0") in text
    assert nginx.balancer_stream(601, ["10.0.0.11:601", "10.0.0.12:601"], host="0.0.0.0") in text
