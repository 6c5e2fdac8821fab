"""The webhook response connector (response/connectors/webhook.py) against a real local receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pacsguard.core.errors import ConnectorError
from pacsguard.core.settings import Channel, DeliveryPolicy, WebhookConnectorSettings, load_settings
from pacsguard.engines.channels.webhook_format import verify
from pacsguard.response.connectors.webhook import WebhookConnector, request_for

SECRET = "connector-test-secret-0123456789"


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"requests": [], "status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["requests"].append((dict(self.headers), body))
            self.send_response(state["status"])
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()


def hook() -> WebhookConnectorSettings:
    return WebhookConnectorSettings(name="expire-shares", channel="soar", signals=["5a"],
                                    action="expire every share link created by {entity}")


def test_request_names_the_entity_and_a_stable_id() -> None:
    req = request_for(hook(), "pg-abc", "dr.x")
    assert (req.text, req.connector, req.delivery_id) == ("expire every share link created by dr.x",
                                                          "webhook:expire-shares", "pg-abc.contain.expire-shares")


def test_dry_run_sends_nothing_and_execute_sends_one_signed_request(
        receiver: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_HOOK_SECRET", SECRET)
    channel = Channel(name="soar", type="webhook", url=receiver["url"], secret_env="PG_HOOK_SECRET")
    req = request_for(hook(), "pg-abc", "dr.x")
    dry = WebhookConnector(hook(), channel, dry_run=True).ask(req, {"id": "pg-abc"})
    assert dry == "would ask soar to: expire every share link created by dr.x" and receiver["requests"] == []
    done = WebhookConnector(hook(), channel).ask(req, {"id": "pg-abc"})
    assert done.startswith("asked soar to: expire every share link created by dr.x (accepted: HTTP 200")
    [(headers, body)] = receiver["requests"]
    assert verify(SECRET.encode(), body, headers["X-Pacsguard-Signature"])
    assert headers["Idempotency-Key"] == "pg-abc.contain.expire-shares"
    assert json.loads(body)["alert"]["response"]["target"] == "dr.x"


def test_a_refusal_is_one_connector_error(receiver: dict[str, Any]) -> None:
    receiver["status"] = 404
    channel = Channel(name="soar", type="webhook", url=receiver["url"])
    with pytest.raises(ConnectorError) as caught:
        WebhookConnector(hook(), channel, DeliveryPolicy(max_attempts=1)).ask(request_for(hook(), "pg-1", "x"), {})
    assert str(caught.value).startswith("webhook:expire-shares: cannot ask for 'expire every share link created by x' "
                                        "through channel soar: not retried (HTTP 404)")


def test_settings_refuse_a_connector_on_an_unknown_channel() -> None:
    from pacsguard.core.errors import PacsguardError

    with pytest.raises(PacsguardError, match="connectors.webhooks.0.channel: 'soar' is not a webhook channel"):
        load_settings(environ={}, overrides={"connectors": {"webhooks": [hook().model_dump()]}})
