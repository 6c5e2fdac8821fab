"""Every test under tests/cluster talks to a real OpenSearch node: marked `cluster` here,
so a test file cannot forget the marker and `-m "not cluster"` never starts a node."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from alert_receivers import SECRET, Mailbox, Receiver

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Receiver, Mailbox, int]]:
    monkeypatch.setenv("PG_LOOP_SECRET", SECRET)
    hook, box = Receiver(), Mailbox()
    with socket.socket() as probe:  # aiosmtpd checks readiness by connecting: it needs a real port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(box, hostname="127.0.0.1", port=port)
    smtp.start()
    yield hook, box, port
    smtp.stop()
    hook.server.shutdown()
