"""Alert delivery (engines/delivery.py) against real local receivers, no cluster.

Webhook and Slack go to an http.server on 127.0.0.1 that checks the HMAC signature with its
own code (not the pack's) and records every request; e-mail goes to aiosmtpd with STARTTLS or
implicit TLS, AUTH PLAIN/LOGIN and a throwaway CA made here with `cryptography`.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pacsguard.core.content import content_path
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Channel, DeliveryPolicy, load_settings
from pacsguard.engines.channels.attempt import Scrubber
from pacsguard.engines.channels.webhook_format import webhook_body
from pacsguard.engines.delivery import (
    AlertMessage,
    DeliveryResult,
    backoff_seconds,
    deliver,
    delivery_problems,
)
from pacsguard.rules.compiler import channel_objects

SECRET = "whsec-0123456789abcdef-test"
SMTP_USER = "pacsguard-alerts"
SMTP_PASSWORD = "Corr3ct-H0rse-Battery"
FAST = DeliveryPolicy(max_attempts=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.05,
                      attempt_timeout_seconds=5, total_seconds=30)
MESSAGE = AlertMessage(
    subject="[pacsguard HIGH] 1a Login-failure burst on one account: dr.house",
    text="Rule: Login-failure burst on one account (1a)\nEntity: dr.house (9 failures in 10m)\n"
         "Owner: pacs-admins\nFirst step: lock the account.",
    alert={"rule": {"id": "3b258e39", "signal": "1a"}, "entity": "dr.house", "count": 9, "severity": "high"},
)


# --- a throwaway CA and a server certificate for 127.0.0.1 ---------------------------------------------

@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "delivery test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- an HTTP receiver that verifies signatures its own way ---------------------------------------------

@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    signature_ok: bool | None  # None: no signature header

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers with `script` in order (the last entry repeats) and records every request."""

    script: list[tuple[int, dict[str, str], bytes]]
    secret: bytes | None = None
    requests: list[Received] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    url: str = ""

    def verify(self, body: bytes, header: str | None) -> bool | None:
        # The receiver's side of docs/alerting.md, written independently of the pack's sign().
        if header is None or self.secret is None:
            return None
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, header)

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.answered < 300]


@pytest.fixture
def receiver() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(*script: tuple[int, dict[str, str], bytes] | int, secret: bytes | None = None,
              tls: ssl.SSLContext | None = None) -> Receiver:
        steps = [s if isinstance(s, tuple) else (s, {}, b"ok") for s in script]
        state = Receiver(steps, secret, tls=tls)
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    status, headers, answer = state.script[min(len(state.requests), len(state.script) - 1)]
                    state.requests.append(Received(self.path, dict(self.headers.items()), body, status,
                                                   state.verify(body, self.headers.get("X-Pacsguard-Signature"))))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        servers.append(server)
        # a short poll: shutdown() waits for it, once per test
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        scheme = "https" if tls else "http"
        state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/hooks/T000/B000/tok3n-in-the-path"
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def webhook(url: str, **extra: Any) -> Channel:
    return Channel.model_validate({"name": "soc-webhook", "type": "webhook", "url": url, **extra})


def text_of(result: DeliveryResult) -> str:
    """Everything a result can show: its repr and the stored form."""
    return repr(result) + json.dumps(result.to_dict())


# --- webhook --------------------------------------------------------------------------------------------

def test_webhook_posts_the_alert_signed_with_id_and_timestamp_headers(receiver: Any) -> None:
    hook = receiver(200, secret=SECRET.encode())
    channel = webhook(hook.url, secret_env="SOC_HOOK_SECRET", headers={"X-Tenant": "radiology"},
                      headers_from_env={"Authorization": "SOC_HOOK_AUTH"})
    env = {"SOC_HOOK_SECRET": SECRET, "SOC_HOOK_AUTH": "Bearer soar-token-42"}
    result = deliver(channel, MESSAGE, delivery_id="a1b2c3.soc-webhook", policy=FAST, environ=env)

    assert (result.ok, result.reason, result.attempts, result.status) == (True, "delivered", 1, "HTTP 200")
    assert result.error is None and result.started_at <= result.finished_at
    [request] = hook.requests
    assert request.signature_ok is True
    assert request.path == "/hooks/T000/B000/tok3n-in-the-path"
    body = request.json()
    assert body["alert"] == MESSAGE.alert
    assert (body["subject"], body["text"]) == (MESSAGE.subject, MESSAGE.text)
    assert body["delivery"]["id"] == request.headers["Idempotency-Key"] == "a1b2c3.soc-webhook"
    assert str(body["delivery"]["timestamp"]) == request.headers["X-Pacsguard-Timestamp"]
    assert (body["delivery"]["channel"], body["delivery"]["attempt"]) == ("soc-webhook", 1)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Tenant"] == "radiology"
    assert request.headers["Authorization"] == "Bearer soar-token-42"
    # the receiver's check is not a rubber stamp: the same body under another key does not verify
    other = Receiver([], secret=b"another-key-0123456789")
    assert other.verify(request.body, request.headers["X-Pacsguard-Signature"]) is False
    assert "soar-token-42" not in text_of(result) and SECRET not in text_of(result)


def test_unsigned_webhook_has_no_signature_header(receiver: Any) -> None:
    hook = receiver(204)
    result = deliver(webhook(hook.url), MESSAGE, delivery_id="u1", policy=FAST, environ={})
    assert result.ok and result.status == "HTTP 204"
    assert "X-Pacsguard-Signature" not in hook.requests[0].headers


def test_webhook_503_twice_then_accepted_is_delivered_once_after_three_attempts(receiver: Any) -> None:
    hook = receiver(503, 503, 200, secret=SECRET.encode())
    channel = webhook(hook.url, secret_env="S")
    result = deliver(channel, MESSAGE, delivery_id="retry-1", policy=FAST, environ={"S": SECRET})

    assert (result.ok, result.reason, result.attempts) == (True, "delivered", 3)
    assert result.history == ("HTTP 503", "HTTP 503", "HTTP 200")
    assert len(hook.requests) == 3 and len(hook.accepted()) == 1
    # every attempt is signed and carries the same id, so a receiver can drop a duplicate
    assert all(r.signature_ok for r in hook.requests)
    assert {r.headers["Idempotency-Key"] for r in hook.requests} == {"retry-1"}
    assert [r.json()["delivery"]["attempt"] for r in hook.requests] == [1, 2, 3]


def test_webhook_400_is_not_retried_and_the_failure_is_recorded(receiver: Any) -> None:
    hook = receiver((400, {}, b'{"error": "unknown field severity"}'))
    result = deliver(webhook(hook.url), MESSAGE, delivery_id="bad-1", policy=FAST, environ={})

    assert (result.ok, result.reason, result.attempts, result.status) == (False, "permanent", 1, "HTTP 400")
    assert len(hook.requests) == 1
    assert result.error is not None and "HTTP 400" in result.error and "unknown field severity" in result.error
    stored = result.to_dict()
    assert stored["ok"] is False and stored["attempts"] == 1 and stored["history"] == ["HTTP 400"]
    json.dumps(stored)  # the engine stores it as is


def test_retry_after_is_honoured_and_a_wait_past_the_budget_stops_with_the_hint(receiver: Any) -> None:
    hook = receiver((429, {"Retry-After": "7"}, b"slow down"), 200)
    waits: list[float] = []
    result = deliver(webhook(hook.url), MESSAGE, delivery_id="ra-1", policy=FAST, environ={}, sleep=waits.append)
    assert result.ok and result.attempts == 2
    assert len(waits) == 1 and waits[0] >= 7  # not the 10 ms back-off of FAST

    hook = receiver((503, {"Retry-After": "3600"}, b"maintenance"))
    waits = []
    result = deliver(webhook(hook.url), MESSAGE, delivery_id="ra-2", policy=FAST, environ={}, sleep=waits.append)
    assert (result.ok, result.reason, result.attempts) == (False, "time-exhausted", 1)
    assert result.retry_after_seconds == 3600 and waits == []
    assert result.error is not None and "retry after 3600 s" in result.error


def test_transient_failures_stop_after_max_attempts(receiver: Any) -> None:
    hook = receiver(502)
    result = deliver(webhook(hook.url), MESSAGE, delivery_id="x-1", policy=FAST, environ={})
    assert (result.ok, result.reason, result.attempts) == (False, "attempts-exhausted", 3)
    assert len(hook.requests) == 3 and result.history == ("HTTP 502",) * 3
    assert result.error is not None and result.error.startswith("gave up after 3 attempts")


def test_unreachable_webhook_is_retried_and_never_raises() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    result = deliver(webhook(url), MESSAGE, delivery_id="down-1", policy=FAST, environ={})
    assert (result.ok, result.reason, result.attempts) == (False, "attempts-exhausted", 3)
    assert result.history == ("connection refused",) * 3


def test_redirects_are_not_followed(receiver: Any) -> None:
    target = receiver(200)
    hook = receiver((307, {"Location": target.url}, b""))
    result = deliver(webhook(hook.url), MESSAGE, delivery_id="r-1", policy=FAST, environ={})
    assert (result.ok, result.reason, result.status) == (False, "permanent", "HTTP 307")
    assert target.requests == [] and result.error is not None and "redirects are not followed" in result.error


def test_https_webhook_verifies_the_certificate(receiver: Any, certs: Certs) -> None:
    hook = receiver(200, tls=certs.server_context())
    result = deliver(webhook(hook.url), MESSAGE, delivery_id="tls-1", policy=FAST, environ={})
    assert (result.ok, result.reason, result.attempts) == (False, "permanent", 1)
    assert result.status == "TLS certificate not trusted" and hook.requests == []

    result = deliver(webhook(hook.url, ca_bundle=str(certs.ca)), MESSAGE, delivery_id="tls-2", policy=FAST,
                     environ={})
    assert result.ok and len(hook.requests) == 1

    result = deliver(webhook(hook.url, verify_tls=False), MESSAGE, delivery_id="tls-3", policy=FAST, environ={})
    assert result.ok and len(hook.requests) == 2


def test_channel_that_cannot_be_used_sends_nothing_and_says_why(receiver: Any, tmp_path: Path) -> None:
    hook = receiver(200)
    result = deliver(webhook(hook.url, secret_env="MISSING_SECRET"), MESSAGE, delivery_id="c-1", environ={})
    assert (result.ok, result.reason, result.attempts) == (False, "not-configured", 0)
    assert result.error == "channel soc-webhook secret: environment variable MISSING_SECRET is not set"
    short = tmp_path / "short"
    short.write_text("tooshort\n")
    result = deliver(webhook(hook.url, secret_file=str(short)), MESSAGE, delivery_id="c-2", environ={})
    assert result.reason == "not-configured" and "shorter than 16 characters" in (result.error or "")
    assert "tooshort" not in text_of(result)
    assert hook.requests == []


def test_a_malformed_delivery_id_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="delivery_id 'a b'"):
        deliver(webhook("http://127.0.0.1:9/"), MESSAGE, delivery_id="a b")
    with pytest.raises(ValueError, match="JSON-able"):
        AlertMessage("s", "t", {"when": dt.datetime.now()})


# --- Slack -----------------------------------------------------------------------------------------------

def test_slack_gets_text_with_mentions_escaped_and_the_url_never_shows(receiver: Any) -> None:
    hook = receiver(200)
    channel = Channel(name="soc-slack", type="slack", url_env="SLACK_URL")
    message = AlertMessage("[pacsguard] 3 admin grant: <!channel>", "user <!here> & <https://evil|bank> granted admin")
    result = deliver(channel, message, delivery_id="s-1", policy=FAST, environ={"SLACK_URL": hook.url})
    assert result.ok
    [request] = hook.requests
    assert request.json() == {"text": "*[pacsguard] 3 admin grant: &lt;!channel&gt;*\n"
                                      "user &lt;!here&gt; &amp; &lt;https://evil|bank&gt; granted admin"}
    assert "X-Pacsguard-Signature" not in request.headers

    failing = receiver((404, {}, b"no_service"))
    result = deliver(channel, MESSAGE, delivery_id="s-2", policy=FAST, environ={"SLACK_URL": failing.url})
    assert (result.ok, result.status) == (False, "HTTP 404") and "no_service" in (result.error or "")
    assert "tok3n-in-the-path" not in text_of(result)


# --- SMTP ------------------------------------------------------------------------------------------------

@dataclass
class Mailbox:
    """An aiosmtpd handler: records each message with how its session was secured and authenticated."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    mechanisms: list[str] = field(default_factory=list)
    rcpt_answers: dict[str, list[str]] = field(default_factory=dict)  # address -> answers, used in order

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        self.mechanisms.append(mechanism)
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode()
              and auth_data.password == SMTP_PASSWORD.encode())
        # A careless server that echoes what it got: the pack must not carry that on.
        echo = f"535 5.7.8 rejected {auth_data.login.decode()}:{auth_data.password.decode()}" if not ok else None
        return AuthResult(success=ok, handled=False, message=echo)  # handled=False: aiosmtpd answers

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        answers = self.rcpt_answers.get(address)
        if answers:
            answer = answers.pop(0)
            if not answer.startswith("250"):
                return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        # session.ssl is set by STARTTLS only; the transport knows about implicit TLS too
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
        self.messages.append({"tls": tls, "authenticated": session.authenticated,
                              "mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                              "mail": email.message_from_bytes(envelope.content, policy=email.policy.default)})
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(certs: Certs) -> Iterator[Any]:
    controllers: list[Controller] = []

    def start(*, implicit_tls: bool = False, starttls: bool = True,
              exclude: tuple[str, ...] = ()) -> tuple[Mailbox, int]:
        box = Mailbox()
        port = free_port()
        kwargs: dict[str, Any] = {"authenticator": box.authenticate, "auth_required": True,
                                  "auth_exclude_mechanism": list(exclude)}
        if implicit_tls:  # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; this one is TLS throughout
            kwargs.update(ssl_context=certs.server_context(), auth_require_tls=False)
        elif starttls:
            kwargs.update(tls_context=certs.server_context(), require_starttls=True)
        else:  # a server that offers no TLS at all; AUTH would be refused in clear anyway
            kwargs.update(auth_required=False)
        controller = Controller(box, hostname="127.0.0.1", port=port, server_hostname="mail.test", **kwargs)
        controller.start()
        controllers.append(controller)
        return box, port

    yield start
    for controller in controllers:
        controller.stop()


def mail_channel(port: int, certs: Certs, **extra: Any) -> Channel:
    fields: dict[str, Any] = {
        "name": "pacs-owner", "type": "smtp", "host": "127.0.0.1", "port": port, "security": "starttls",
        "username": SMTP_USER, "password_env": "SMTP_PW", "from_address": "pacsguard@hospital.example",
        "recipients": ["pacs-admin@hospital.example", "soc@hospital.example"], "ca_bundle": str(certs.ca)}
    fields.update(extra)
    return Channel.model_validate(fields)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtp_starttls_and_auth_delivers_the_mail(smtp_server: Any, certs: Certs, mechanism: str) -> None:
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    box, port = smtp_server(exclude=(other,))  # offer only the mechanism under test
    result = deliver(mail_channel(port, certs), MESSAGE, delivery_id="m-1.pacs-owner", policy=FAST,
                     environ={"SMTP_PW": SMTP_PASSWORD})

    assert (result.ok, result.reason, result.attempts, result.status) == (True, "delivered", 1, "SMTP 250")
    assert box.mechanisms == [mechanism]
    [got] = box.messages
    assert got["tls"] is True and got["authenticated"] is True
    assert got["mail_from"] == "pacsguard@hospital.example"
    assert got["rcpt_tos"] == ["pacs-admin@hospital.example", "soc@hospital.example"]
    mail: EmailMessage = got["mail"]
    assert mail["Subject"] == MESSAGE.subject
    assert mail["To"] == "pacs-admin@hospital.example, soc@hospital.example"
    assert mail["Message-ID"] == "<pacsguard.m-1.pacs-owner@hospital.example>"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content().replace("\r\n", "\n").rstrip("\n") == MESSAGE.text  # SMTP lines end in CRLF


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # it is TLS from the first byte
def test_smtp_implicit_tls(smtp_server: Any, certs: Certs) -> None:
    box, port = smtp_server(implicit_tls=True)
    result = deliver(mail_channel(port, certs, security="tls"), MESSAGE, delivery_id="m-2", policy=FAST,
                     environ={"SMTP_PW": SMTP_PASSWORD})
    assert result.ok and len(box.messages) == 1 and box.messages[0]["tls"] is True


def test_smtp_untrusted_certificate_is_refused_before_auth(smtp_server: Any, certs: Certs) -> None:
    box, port = smtp_server()
    channel = mail_channel(port, certs, ca_bundle=None)
    result = deliver(channel, MESSAGE, delivery_id="m-3", policy=FAST, environ={"SMTP_PW": SMTP_PASSWORD})
    assert (result.ok, result.reason, result.attempts) == (False, "permanent", 1)
    assert result.status == "TLS certificate not trusted" and box.mechanisms == [] and box.messages == []


def test_smtp_server_without_starttls_gets_no_mail_and_no_password(smtp_server: Any, certs: Certs) -> None:
    box, port = smtp_server(starttls=False)
    result = deliver(mail_channel(port, certs), MESSAGE, delivery_id="m-4", policy=FAST,
                     environ={"SMTP_PW": SMTP_PASSWORD})
    assert (result.ok, result.reason) == (False, "permanent")
    assert "does not offer STARTTLS" in (result.error or "")
    assert box.mechanisms == [] and box.messages == []


def test_wrong_smtp_password_is_a_clear_failure_without_the_password(smtp_server: Any, certs: Certs) -> None:
    box, port = smtp_server()
    wrong = "Wr0ng-Pa55word-xyz"
    result = deliver(mail_channel(port, certs), MESSAGE, delivery_id="m-5", policy=FAST, environ={"SMTP_PW": wrong})

    assert (result.ok, result.reason, result.attempts, result.status) == (False, "permanent", 1, "SMTP 535")
    assert result.error is not None
    assert "authentication failed for user 'pacsguard-alerts'" in result.error and "password_env" in result.error
    assert "rejected pacsguard-alerts:[redacted]" in result.error  # the server's words, minus the password
    shown = text_of(result)
    for form in (wrong, base64.b64encode(wrong.encode()).decode(),
                 base64.b64encode(f"\0{SMTP_USER}\0{wrong}".encode()).decode()):
        assert form not in shown
    assert box.messages == []


def test_smtp_server_down_is_retried_then_recorded_as_failed(certs: Certs) -> None:
    result = deliver(mail_channel(free_port(), certs), MESSAGE, delivery_id="m-6", policy=FAST,
                     environ={"SMTP_PW": SMTP_PASSWORD})
    assert (result.ok, result.reason, result.attempts) == (False, "attempts-exhausted", 3)
    assert result.history == ("connection refused",) * 3
    assert result.error is not None and "gave up after 3 attempts" in result.error


def test_deferred_recipient_is_retried_alone_and_a_refused_one_is_reported(smtp_server: Any, certs: Certs) -> None:
    box, port = smtp_server()
    box.rcpt_answers = {"soc@hospital.example": ["451 4.3.0 try again later"],
                        "gone@hospital.example": ["550 5.1.1 no such user"]}
    channel = mail_channel(port, certs, recipients=["pacs-admin@hospital.example", "soc@hospital.example",
                                                    "gone@hospital.example"])
    result = deliver(channel, MESSAGE, delivery_id="m-7", policy=FAST, environ={"SMTP_PW": SMTP_PASSWORD})

    assert (result.ok, result.attempts) == (True, 2)
    assert [m["rcpt_tos"] for m in box.messages] == [["pacs-admin@hospital.example"], ["soc@hospital.example"]]
    assert result.refused_recipients == ("gone@hospital.example",)
    assert "2 of 3 recipients" in result.detail and "550 5.1.1 no such user" in result.detail
    # both copies are the same message to a mail client
    assert {m["mail"]["Message-ID"] for m in box.messages} == {"<pacsguard.m-7@hospital.example>"}


# --- settings and back-off -------------------------------------------------------------------------------

def test_channel_settings_are_checked_and_problems_named(tmp_path: Path) -> None:
    with pytest.raises(PacsguardError, match=r"notifications\.channels\.0: Value error, host does not apply to a "
                                             r"webhook channel"):
        load_settings(overrides={"notifications": {"channels": [
            {"name": "x", "type": "webhook", "url": "https://h/", "host": "smtp"}]}}, environ={})
    with pytest.raises(PacsguardError, match="give one of url, url_env, url_file, not url and url_env"):
        load_settings(overrides={"notifications": {"channels": [
            {"name": "x", "type": "slack", "url": "https://h/", "url_env": "U"}]}}, environ={})
    with pytest.raises(PacsguardError, match=r"recipients\.0|recipient 'not-an-address'"):
        load_settings(overrides={"notifications": {"channels": [
            {"name": "x", "type": "smtp", "recipients": ["not-an-address"]}]}}, environ={})

    alerting_only = Channel(name="mail", type="smtp", smtp_account="acct", recipients=["a@b.example"])
    assert delivery_problems(alerting_only, environ={}) == [
        "notifications channel mail (smtp): needs host", "notifications channel mail (smtp): needs from_address"]
    clear = Channel(name="mail", type="smtp", host="h", security="none", username="u", password_env="P",
                    from_address="p@h.example", recipients=["a@b.example"])
    assert delivery_problems(clear, environ={"P": "x"}) == [
        "notifications channel mail (smtp): security none would send the password in clear text; use starttls or tls"]
    hook = Channel(name="hook", type="webhook", url="https://h/", headers={"X-Pacsguard-Signature": "forged"})
    assert delivery_problems(hook, environ={}) == [
        "notifications channel hook (webhook): header X-Pacsguard-Signature is set by pacsguard and cannot be overridden"]
    assert delivery_problems(Channel(name="c", type="chime", url="https://h/"), environ={})[0].endswith(
        "use webhook, slack or smtp with the pacsguard engine")


def test_the_commented_channel_examples_in_settings_yaml_are_valid() -> None:
    text = content_path("pack", "settings.yaml").read_text()
    block = text[text.index("# notifications:\n"):text.index("\nnotifications:\n")]
    example = yaml.safe_load("\n".join(re.sub(r"^# ?", "", line) for line in block.splitlines()))
    settings = load_settings(overrides=example, environ={})
    channels = {c.name: c for c in settings.notifications.channels}
    assert [c.type for c in channels.values()] == ["webhook", "slack", "smtp"]
    assert channels["pacs-owner"].smtp_port() == 587
    env = {"PACSGUARD_SOC_WEBHOOK_SECRET": SECRET, "SOAR_AUTH_HEADER": "Bearer x",
           "PACSGUARD_SMTP_PASSWORD": "pw"}
    # Only the files the examples name are missing: the shapes are right.
    assert all("/etc/ssl/hospital-ca.pem" in p or "/run/secrets/" in p
               for c in channels.values() for p in delivery_problems(c, environ=env))
    assert delivery_problems(channels["pacs-owner"], environ=env) == []


def test_one_channel_list_serves_alerting_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SLACK_URL", "https://hooks.slack.example/services/T1/B2/xyz")
    settings = load_settings(overrides={"notifications": {"channels": [
        {"name": "soc-slack", "type": "slack", "url_env": "TEST_SLACK_URL"},
        {"name": "mail", "type": "smtp", "smtp_account": "acct", "recipients": ["a@b.example"],
         "host": "smtp.b.example", "from_address": "p@b.example"}]}}, environ={})
    configs = {o.body["config"]["name"].split()[-1]: o.body["config"] for o in channel_objects(settings)}
    assert configs["soc-slack"]["slack"] == {"url": "https://hooks.slack.example/services/T1/B2/xyz"}
    assert configs["mail"]["email"] == {"email_account_id": "acct",
                                                  "recipient_list": [{"recipient": "a@b.example"}]}


def test_scrubber_removes_secrets_and_their_wire_encodings() -> None:
    scrub = Scrubber("s3cret-pw", username="u")
    plain = base64.b64encode(b"\0u\0s3cret-pw").decode()
    said = f"got s3cret-pw, {base64.b64encode(b's3cret-pw').decode()} and {plain}"
    assert scrub(said) == "got [redacted], [redacted] and [redacted]"


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    policy = DeliveryPolicy(initial_backoff_seconds=1, max_backoff_seconds=30)
    lows = [backoff_seconds(n, policy, rand=lambda: 0.0) for n in range(1, 8)]
    highs = [backoff_seconds(n, policy, rand=lambda: 1.0) for n in range(1, 8)]
    assert lows == [0.5, 1, 2, 4, 8, 15, 15]
    assert highs == [1, 2, 4, 8, 16, 30, 30]


# --- the docs example is byte-correct --------------------------------------------------------------------

def test_docs_signature_example_is_byte_correct() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "alerting.md").read_text()
    secret = re.search(r"^secret: (\S+)$", docs, re.MULTILINE)
    body = re.search(r"^body: (\{.*\})$", docs, re.MULTILINE)
    signature = re.search(r"^X-Pacsguard-Signature: (sha256=[0-9a-f]{64})$", docs, re.MULTILINE)
    assert secret and body and signature, "docs/alerting.md lost its worked example"
    assert "sha256=" + hmac.new(secret.group(1).encode(), body.group(1).encode(), hashlib.sha256).hexdigest() \
        == signature.group(1)
    # and the pack really produces those bytes for the example's inputs
    doc = json.loads(body.group(1))
    rebuilt = webhook_body(AlertMessage(doc["subject"], doc["text"], doc["alert"]),
                           delivery_id=doc["delivery"]["id"], channel=doc["delivery"]["channel"],
                           attempt=doc["delivery"]["attempt"], timestamp=doc["delivery"]["timestamp"])
    assert rebuilt == body.group(1).encode()
