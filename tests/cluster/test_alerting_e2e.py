"""End to end: installed, scheduled monitors (not a dry run) raise an alert within
2 minutes of the events being indexed, the webhook channel delivers it to a local
HTTP receiver, and acknowledging it works.

Runs on the Alerting node of the test session (tests/conftest.py `alerting_url`: a local node
built with the plugin zips of ../shared/opensearch-plugins/2.19.6, or the cluster named by
PACSGUARD_TEST_ALERTING_URL); skipped with the reason where neither exists.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import ClusterSettings, Settings
from pacsguard.packobjects import KINDS
from pacsguard.services.alerts import acknowledge, list_alerts
from pacsguard.services.install import install, uninstall


@pytest.fixture(scope="module")
def alerting_cluster(alerting_url: str) -> Cluster:
    return Cluster.connect(ClusterSettings(url=alerting_url))


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[str]]]:
    received: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append(self.rfile.read(length).decode(errors="replace"))
            self.send_response(200)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pacsguard", received
    server.shutdown()


def test_scheduled_monitor_alerts_and_webhook_delivers(
    alerting_cluster: Cluster, alerting_url: str, receiver: tuple[str, list[str]], unique: str
) -> None:
    from testnode import make_settings

    url, received = receiver
    settings: Settings = make_settings(alerting_url, f"pge2e{unique}", f"e2e{unique}",
                                       notifications={"channels": [{"name": "hook", "type": "webhook", "url": url}]},
                                       engine={"mode": "alerting"})
    try:
        # inside the try: an install that fails half-way is removed like a finished one
        install(alerting_cluster, settings)
        assert list_alerts(alerting_cluster, settings) == []
        now = dt.datetime.now(dt.timezone.utc)
        user = f"victim-{unique}"
        lines = []
        for i in range(settings.thresholds.login_failures_per_user):
            event = {"timestamp": (now - dt.timedelta(seconds=30 - i)).isoformat(), "app": "e2e",
                     "action": "user-login", "outcome": "failure", "user": user, "source_ip": "10.9.9.9"}
            lines += [json.dumps({"create": {"_index": settings.index("events_data_stream")}}),
                      json.dumps({"message": json.dumps(event)})]
        alerting_cluster.request("POST", "/_bulk", body="\n".join(lines) + "\n", params={"refresh": "true"})
        indexed_at = time.monotonic()

        # the pack's monitor is found by the id at the start of its name (Alerting strips ui_metadata)
        monitor_id = KINDS["monitor"].monitor_id(alerting_cluster, f"{settings.scope}-rule-1a")  # type: ignore[attr-defined]
        assert monitor_id, "the 1a monitor is not installed"
        alert = None
        while time.monotonic() - indexed_at < 120 and alert is None:
            alert = next((a for a in list_alerts(alerting_cluster, settings, states=["ACTIVE"]) if a.signal == "1a"),
                         None)
            time.sleep(5)
        assert alert is not None, "no alert within 2 minutes of indexing"
        assert alert.engine == "alerting" and alert.entity == user
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            time.sleep(1)
        body = next(b for b in received if user in b)
        assert f"Entity (user.name): {user}" in body and "Owner: " in body and "First response (contain):" in body

        acknowledge(alerting_cluster, settings, alert.id, by="e2e")
        assert any(a.id == alert.id and a.state == "ACKNOWLEDGED" for a in list_alerts(alerting_cluster, settings))
        # a second install changes nothing and keeps one monitor per rule
        assert install(alerting_cluster, settings).applied == []
        names = [m["name"] for m in KINDS["monitor"]._all(alerting_cluster)  # type: ignore[attr-defined]
                 if m["name"].startswith(f"{settings.scope}-rule-")]
        assert len(names) == len({n.split(" ", 1)[0] for n in names}) == 10
    finally:
        uninstall(alerting_cluster, settings, purge=True)
