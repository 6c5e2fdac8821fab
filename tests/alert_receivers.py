"""Real receivers for the alert-loop tests: a webhook receiver that checks every request's HMAC
signature, an SMTP mailbox (aiosmtpd), and settings that route alerts to them."""

from __future__ import annotations

import email
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pacsguard.core.settings import Settings

SECRET = "loop-test-signing-secret-0123456789"


class Receiver:
    """A webhook receiver that checks the HMAC signature of every request it records."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.bad_signatures = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(want, self.headers.get("X-Pacsguard-Signature", "")):
                    outer.bad_signatures += 1
                outer.requests.append({"headers": dict(self.headers), "body": json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


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
