"""`pacsguard up` starts the console next to the local node and prints its URL; `down` would stop it."""

from __future__ import annotations

import re
import socket
import urllib.request

import pytest
from pacsguard.cli import app
from pacsguard.core.connection import Cluster
from pacsguard.services.console import process
from pacsguard.services.install import uninstall
from testnode import SessionNode, make_settings
from typer.testing import CliRunner

pytestmark = pytest.mark.cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_up_prints_the_console_url_and_the_console_answers(test_node: SessionNode, cluster_url: str) -> None:
    if test_node.port is None:
        pytest.skip("`up` manages the local node of the test session; PACSGUARD_TEST_URL names another cluster")
    TEST_PORT = test_node.port
    port = free_port()
    result = CliRunner().invoke(app, ["--namespace", "upconsole", "up", "--port", str(TEST_PORT), "--no-watch",
                                      "--console-port", str(port)])
    try:
        assert result.exit_code == 0, result.output
        match = re.search(r"^Console: (http://127\.0\.0\.1:\d+/) ", result.output, re.MULTILINE)
        assert match, result.output
        assert match[1] == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(match[1], timeout=15) as res:
            page = res.read().decode()
        assert res.status == 200 and "Alert queue" in page and "PACS security overview" in page
        again = CliRunner().invoke(app, ["--namespace", "upconsole", "up", "--port", str(TEST_PORT), "--no-watch",
                                         "--console-port", str(port)])
        assert f"Console: http://127.0.0.1:{port}/" in again.output  # reused, not a second one
    finally:
        assert process.stop(TEST_PORT)
        settings = make_settings(cluster_url, "pacsguard", "upconsole")
        uninstall(Cluster.connect(settings.cluster), settings, purge=True)
    assert process.running(TEST_PORT) is None
