"""The console's guard rails, without a cluster: loopback by default, a token required elsewhere,
CSRF on every state change, the Host header checked, a strict CSP, plotly.js served locally.

The requests below are refused before any handler runs, so the cluster URL is never called
(it points at a closed port on purpose: a request reaching it would fail the test).
"""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest
from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import load_settings
from pacsguard.services.console.app import PLOTLY_JS, ConsoleConfig, create_app
from starlette.testclient import TestClient

TOKEN = "a-long-console-token-0123456789"


def _closed() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def client(config: ConsoleConfig, host: str = "127.0.0.1") -> TestClient:
    settings = load_settings(overrides={"cluster": {"url": _closed()}}, environ={})
    app = create_app(Cluster.connect(settings.cluster), settings, config)
    return TestClient(app, base_url=f"http://{host}:{config.port}")


def test_binding_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(PacsguardError, match="binds 0.0.0.0, beyond this machine"):
        ConsoleConfig.build("0.0.0.0", 8765, environ={})
    with pytest.raises(PacsguardError, match="at least 16 characters"):
        ConsoleConfig.build("0.0.0.0", 8765, environ={"PACSGUARD_CONSOLE_TOKEN": "short"})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert ConsoleConfig.build("10.1.2.3", 8765, token_file, environ={}).token == TOKEN
    assert ConsoleConfig.build("127.0.0.1", 8765, environ={}).token is None


def test_token_is_required_when_set() -> None:
    config = ConsoleConfig.build("192.0.2.10", 8765, environ={"PACSGUARD_CONSOLE_TOKEN": TOKEN})
    web = client(config, host="192.0.2.10")
    res = web.get("/static/console.css")
    assert res.status_code == 401 and res.headers["www-authenticate"].startswith("Basic")
    assert web.get("/static/console.css", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert web.get("/static/console.css", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    basic = base64.b64encode(f"analyst:{TOKEN}".encode()).decode()
    assert web.get("/static/console.css", headers={"Authorization": f"Basic {basic}"}).status_code == 200


def test_state_changes_need_the_page_csrf_token_and_same_origin() -> None:
    config = ConsoleConfig.build("127.0.0.1", 8765, environ={})
    web = client(config)
    assert web.post("/api/alerts/pg-x/ack", json={}).status_code == 403
    assert web.post("/api/alerts/pg-x/ack", json={}, headers={"X-CSRF-Token": "guess"}).status_code == 403
    cross = web.post("/api/alerts/pg-x/ack", json={}, headers={"X-CSRF-Token": config.csrf,
                                                               "Origin": "http://evil.example"})
    assert cross.status_code == 403


def test_foreign_host_header_is_refused_and_headers_are_strict() -> None:
    config = ConsoleConfig.build("127.0.0.1", 8765, environ={})
    web = client(config)
    assert web.get("/static/console.css", headers={"Host": "rebind.example"}).status_code == 400
    res = web.get("/static/vendor/plotly.min.js")
    assert res.status_code == 200 and res.content == PLOTLY_JS.read_bytes()
    csp = res.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "http" not in csp
    assert res.headers["x-frame-options"] == "DENY"
