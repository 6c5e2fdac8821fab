"""Every test under tests/cluster talks to a real OpenSearch node: marked `cluster` here,
so a test file cannot forget the marker and `-m "not cluster"` never starts a node.

The files in BOTH_LINES are also marked `both_lines`: `make test` runs the whole suite on
the default node (2.19.6) and then these again on the 3.x line (PACSGUARD_TEST_VERSION=3.8.0,
`-m both_lines`): install/upgrade/uninstall, every golden pipeline test, every rule scenario,
the alert loop, the collector's hardening tests, and what the node itself runs."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from alert_receivers import SECRET, Mailbox, Receiver
from testnode import node_version

HERE = Path(__file__).resolve().parent

BOTH_LINES = (
    "test_install.py",
    "test_pipeline_golden.py", "test_pipeline_atna.py", "test_pipeline_fhir.py", "test_pipeline_generic.py",
    "test_pipeline_keycloak.py", "test_pipeline_orthanc.py", "test_keycloak_pipeline.py",
    "test_rule_scenarios.py",
    "test_alert_loop.py",
    "test_collector_hardening.py",
    "test_local_node.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        if HERE in path.parents:
            item.add_marker(pytest.mark.cluster)
            if path.name in BOTH_LINES:
                item.add_marker(pytest.mark.both_lines)


def pytest_report_header() -> str:
    return f"pacsguard test node: OpenSearch {node_version() or 'default (pack/local-node.yaml)'}"


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
