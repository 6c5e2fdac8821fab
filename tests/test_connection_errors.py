"""What a user sees when the cluster is unreachable, untrusted, refuses the password, or lacks a plugin.

TLS and basic auth are real: a TLS front with a throwaway CA and a password
check sits before the test node (tests/tlsproxy.py). Every failure must be one
clear line on stderr, a non-zero exit, no traceback, and never the password.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pacsguard.cli import EXIT_MISSING_PLUGIN, EXIT_UNHEALTHY, app
from pacsguard.core.connection import Cluster
from pacsguard.core.errors import MissingPlugin
from pacsguard.core.settings import ClusterSettings
from tlsproxy import TlsProxy, start_proxy

pytestmark = pytest.mark.cluster
PASSWORD = "s3cret-Pa55word-for-tests"


@pytest.fixture(scope="module")
def tls_front(cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsProxy]:
    proxy = start_proxy(cluster_url, tmp_path_factory.mktemp("tls"), "analyst", PASSWORD)
    yield proxy
    proxy.close()


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, env=env or {}, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def assert_clean_failure(code: int, out: str, err: str) -> None:
    assert code != 0
    assert "Traceback" not in out + err
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1, err
    assert PASSWORD not in out + err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_url() -> None:
    port = free_port()
    code, out, err = run(["--url", f"http://127.0.0.1:{port}", "plan"])
    assert_clean_failure(code, out, err)
    assert f"cannot reach http://127.0.0.1:{port}" in err
    assert "connection refused" in err


def test_untrusted_certificate(tls_front: TlsProxy, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    code, out, err = run(["--url", tls_front.url, "--username", "analyst", "--password-file", str(pw), "plan"])
    assert_clean_failure(code, out, err)
    assert "certificate verify failed" in err
    assert "--ca-bundle" in err


def test_wrong_password(tls_front: TlsProxy) -> None:
    env = {"PACSGUARD_CLUSTER__PASSWORD": "not-the-password"}
    code, out, err = run(["--url", tls_front.url, "--username", "analyst", "--ca-bundle", str(tls_front.ca),
                          "status"], env)
    assert_clean_failure(code, out, err)
    assert "authentication failed" in err and "'analyst'" in err and "401" in err
    assert "not-the-password" not in out + err


def test_trusted_ca_and_right_password_work_over_tls(tls_front: TlsProxy) -> None:
    env = {"PACSGUARD_CLUSTER__PASSWORD": PASSWORD}
    code, out, err = run(["--url", tls_front.url, "--username", "analyst", "--ca-bundle", str(tls_front.ca),
                          "--namespace", "tlscheck", "plan"], env)
    assert code == 0, err
    assert "plan:" in out and "to create" in out
    assert PASSWORD not in out + err


def test_insecure_must_be_explicit(tls_front: TlsProxy) -> None:
    env = {"PACSGUARD_CLUSTER__PASSWORD": PASSWORD}
    code, _, err = run(["--url", tls_front.url, "--username", "analyst", "plan"], env)
    assert code != 0 and "certificate verify failed" in err
    code, out, err = run(["--url", tls_front.url, "--username", "analyst", "--insecure", "plan"], env)
    assert code == 0, err


def test_basic_auth_without_password_is_a_settings_error(tls_front: TlsProxy) -> None:
    code, out, err = run(["--url", tls_front.url, "--username", "analyst", "plan"])
    assert_clean_failure(code, out, err)
    assert "password is missing" in err


def test_missing_plugin_is_named(cluster_url: str) -> None:
    cluster = Cluster.connect(ClusterSettings(url=cluster_url))
    with pytest.raises(MissingPlugin, match=r"lacks opensearch-nonexistent \(needed for testing\)"):
        cluster.require_plugins({"opensearch-nonexistent": "testing"})


def test_status_flags_missing_alerting_only_where_rules_need_it(cluster_url: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    plugins, _ = Cluster.connect(ClusterSettings(url=cluster_url)).installed_components()
    if "opensearch-alerting" in plugins:
        pytest.skip("this cluster has Alerting; the missing-plugin path is covered by test_missing_plugin_is_named")
    # engine.mode alerting: the rules cannot run here, and status says why
    monkeypatch.setenv("PACSGUARD_ENGINE__MODE", "alerting")
    code, out, err = run(["--url", cluster_url, "--namespace", "statuscheck", "status", "--strict"])
    assert code == EXIT_UNHEALTHY
    assert "MISSING   opensearch-alerting: needed for detection monitors" in out
    # auto (the default): the rules run on the pacsguard engine, so Alerting is not missing
    monkeypatch.setenv("PACSGUARD_ENGINE__MODE", "auto")
    code, out, err = run(["--url", cluster_url, "--namespace", "statuscheck", "status"])
    assert "MISSING   opensearch-alerting" not in out


def test_missing_plugin_exit_code(cluster_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import pacsguard.core.connection as conn

    monkeypatch.setattr(conn, "REQUIRED_MODULES", {**conn.REQUIRED_MODULES, "opensearch-nonexistent": "a test"})
    monkeypatch.setattr("pacsguard.services.install.REQUIRED_MODULES", conn.REQUIRED_MODULES)
    code, out, err = run(["--url", cluster_url, "--namespace", "plugincheck", "install"])
    assert code == EXIT_MISSING_PLUGIN
    assert_clean_failure(code, out, err)
    assert "opensearch-nonexistent (needed for a test)" in err
