"""Real receivers for the alert-loop tests: a webhook receiver that keeps every request (Hook), one
that also checks every request's HMAC signature (Receiver), an SMTP mailbox (aiosmtpd), and
settings that route alerts to them."""

from __future__ import annotations

import email
import hashlib
import hmac
import json
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pacsguard.core.settings import Settings

SECRET = "loop-test-signing-secret-0123456789"


class Hook:
    """A webhook receiver on loopback that answers 200 and keeps every request: its headers (names
    in lower case) and its body as text. Subclasses read the request their own way (record)."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.record(self.headers, self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(self, headers: Message, body: bytes) -> None:
        self.requests.append(({k.lower(): v for k, v in headers.items()}, body.decode(errors="replace")))

    def bodies(self, needle: str) -> list[str]:
        """The bodies that contain needle."""
        return [body for _, body in self.requests if needle in body]


class Receiver(Hook):
    """A receiver of the pack's signed JSON deliveries: checks the HMAC signature of every request
    it records and keeps the parsed body."""

    def __init__(self) -> None:
        self.bad_signatures = 0
        super().__init__()

    def record(self, headers: Message, body: bytes) -> None:
        want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, headers.get("X-Pacsguard-Signature", "")):
            self.bad_signatures += 1
        self.requests.append({"headers": dict(headers), "body": json.loads(body)})


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def loop_settings(base: Settings, hook: Receiver, smtp_port: int, **engine: Any) -> Settings:
    from pacsguard.core.settings import load_settings

    return load_settings(environ={"PG_LOOP_SECRET": SECRET}, overrides={
        "cluster": {"url": base.cluster.url}, "id_prefix": base.id_prefix, "namespace": base.namespace,
        "pseudonymization": {"salt": "loop-salt-0123456789abcdef"},
        "engine": {"mode": "pacsguard", "renotify_every": "0s", **engine},
        "routing": {"default_owner": "PACS on-call (pacs-oncall@hospital.test)",
                    "routes": [{"signals": ["3"], "owner": "IAM team", "channels": ["soc", "mail"]}]},
        "notifications": {"channels": [
            {"name": "soc", "type": "webhook", "url": hook.url, "secret_env": "PG_LOOP_SECRET"},
            {"name": "mail", "type": "smtp", "host": "127.0.0.1", "port": smtp_port, "security": "none",
             "from_address": "pacsguard@hospital.test", "recipients": ["soc@hospital.test"]}]},
    })
