"""The node the project builds from Maven Central: what it runs, and that up/down are exact."""

from __future__ import annotations

import os
import socket

import pytest
from pacsguard.cli import app
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import ClusterSettings
from pacsguard.devnode import lines, local
from testnode import node_version
from typer.testing import CliRunner

NEEDED_MODULES = {"lang-painless", "lang-mustache", "ingest-common", "ingest-user-agent", "ingest-geoip"}


def test_node_runs_the_modules_the_pack_needs(cluster_url: str) -> None:
    plugins, modules = Cluster.connect(ClusterSettings(url=cluster_url)).installed_components()
    assert NEEDED_MODULES <= modules | plugins


def test_pipeline_with_painless_grok_date_user_agent_and_geoip(cluster_url: str) -> None:
    cluster = Cluster.connect(ClusterSettings(url=cluster_url))
    pipeline = {"processors": [
        {"grok": {"field": "message", "patterns": ["%{IP:source.ip} \\[%{DATA:ts}\\] %{GREEDYDATA:user_agent.original}"]}},
        {"date": {"field": "ts", "formats": ["dd/MMM/yyyy:HH:mm:ss Z"], "target_field": "@timestamp"}},
        {"user_agent": {"field": "user_agent.original", "target_field": "user_agent"}},
        {"geoip": {"field": "source.ip", "target_field": "source.geo"}},
        {"script": {"lang": "painless", "source": "ctx.h = ctx.source.ip.sha256().substring(0, 8)"}},
    ]}
    message = "81.2.69.142 [27/Nov/2026:10:00:00 +0100] Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.0.0 Safari/537.36"
    res = cluster.request("POST", "/_ingest/pipeline/_simulate",
                          body={"pipeline": pipeline, "docs": [{"_source": {"message": message}}]})
    doc = res["docs"][0]["doc"]["_source"]
    assert doc["@timestamp"] == "2026-11-27T09:00:00.000Z"
    assert doc["user_agent"]["name"] == "Chrome" and doc["user_agent"]["os"]["name"] == "Windows"
    assert doc["source"]["geo"]["country_iso_code"] == "GB"
    assert doc["h"] == "d3c1f772"  # sha256("81.2.69.142") computed in Python


def _port_free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(bool(os.environ.get("PACSGUARD_TEST_URL")), reason="uses the local node builder")
def test_cluster_up_status_down_on_its_own_port() -> None:
    port = _port_free()
    version = node_version() or lines.raw_recipe()["default_version"]  # the line this session tests
    runner = CliRunner()
    up = runner.invoke(app, ["cluster", "up", "--mode", "local", "--port", str(port), "--fresh", "--version", version])
    try:
        assert up.exit_code == 0, up.stderr
        assert f"OpenSearch {version} is up at http://127.0.0.1:{port} (local mode)" in up.stdout
        status = runner.invoke(app, ["cluster", "status", "--port", str(port)])
        assert status.exit_code == 0
        assert f"version   OpenSearch {version}: supported (" in status.stdout
        for module in NEEDED_MODULES:
            assert module in status.stdout
    finally:
        down = runner.invoke(app, ["cluster", "down", "--port", str(port)])
    assert down.exit_code == 0 and down.stdout.strip() == "stopped"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    again = runner.invoke(app, ["cluster", "down", "--port", str(port)])
    assert f"no pacsguard node running on port {port}" in again.stdout
    assert local.status(port) is None
