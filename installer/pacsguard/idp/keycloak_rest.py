"""A small client for Keycloak's token endpoint and admin REST API (stdlib HTTP only).

One place knows how to get and refresh a token, verify TLS, and turn what goes
wrong (refused connection, untrusted certificate, rejected credentials, HTTP
errors) into a `KeycloakApiError` of a known kind. Callers (the dev Keycloak's
set-up, the containment connector) phrase those for the user. No message ever
holds a secret: request bodies are never quoted, only Keycloak's error answer.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from pacsguard.core.errors import PacsguardError
from pacsguard.core.escaping import path_segment

ErrorKind = Literal["unreachable", "tls", "auth", "forbidden", "http"]
# Renew a token this long before Keycloak says it expires, so a call never
# leaves with a token that dies in flight.
EXPIRY_MARGIN_SECONDS = 10.0


class KeycloakApiError(PacsguardError):
    """A failed call: kind says why (unreachable, tls, auth, forbidden, http); status is the HTTP status if any."""

    def __init__(self, kind: ErrorKind, message: str, status: int | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.error = error  # Keycloak's `error` / `errorMessage`, when it sent one


@dataclass(frozen=True)
class ClientCredentials:
    """OAuth2 client-credentials grant: a confidential client's service account."""

    client_id: str
    client_secret: SecretStr

    def form(self) -> dict[str, str | SecretStr]:
        return {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret}

    def describe(self) -> str:
        return f"client {self.client_id!r}"


@dataclass(frozen=True)
class PasswordGrant:
    """Resource-owner password grant (direct access grants) on a public client."""

    client_id: str
    username: str
    password: SecretStr

    def form(self) -> dict[str, str | SecretStr]:
        return {"grant_type": "password", "client_id": self.client_id, "username": self.username,
                "password": self.password}

    def describe(self) -> str:
        return f"user {self.username!r} (client {self.client_id!r})"


Grant = ClientCredentials | PasswordGrant


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


class FormBody:
    """A urlencoded request body. Secrets stay SecretStr until encoded, and the repr names the
    fields only: tracebacks (pytest prints every frame's arguments) never show a password."""

    content_type = "application/x-www-form-urlencoded"

    def __init__(self, fields: Mapping[str, str | SecretStr]) -> None:
        self._fields = dict(fields)

    def encode(self) -> bytes:
        return urllib.parse.urlencode({k: _reveal(v) if isinstance(v, SecretStr) else v
                                       for k, v in self._fields.items()}).encode()

    def __repr__(self) -> str:
        return f"<form {', '.join(self._fields)}>"


class JsonBody:
    """A JSON request body; SecretStr values (e.g. a new user's password) are revealed only here."""

    content_type = "application/json"

    def __init__(self, value: Any) -> None:
        self._value = value

    def encode(self) -> bytes:
        return json.dumps(self._value, default=_reveal).encode()

    def __repr__(self) -> str:
        return "<json body>"


@dataclass(frozen=True)
class TokenReply:
    """The token endpoint's answer, successful (status 200) or not."""

    status: int
    body: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200 and "access_token" in self.body

    @property
    def error(self) -> str | None:
        value = self.body.get("error")
        return str(value) if value is not None else None


def public_url(url: str) -> str:
    """The URL without any user:password@ part, for messages."""
    parts = urllib.parse.urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}".rstrip("/")


def ssl_context(ca_bundle: Path | None, verify_tls: bool) -> ssl.SSLContext:
    """Verification on by default; a CA bundle names the CA of a private PKI."""
    if ca_bundle is not None and not ca_bundle.is_file():
        raise PacsguardError(f"CA bundle {ca_bundle} does not exist")
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _reason(exc: BaseException) -> tuple[ErrorKind, str]:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(reason):
        return "tls", "certificate verify failed (give the CA with a CA bundle)"
    if isinstance(reason, ssl.SSLError):
        return "tls", f"TLS error: {reason.reason or reason}"
    if isinstance(reason, ConnectionRefusedError):
        return "unreachable", "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "unreachable", "timed out"
    if isinstance(reason, socket.gaierror):
        return "unreachable", "host name not known"
    return "unreachable", str(reason)


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"errorMessage": raw[:200].decode(errors="replace")}


def _error_text(body: Any) -> str | None:
    if isinstance(body, Mapping):
        for key in ("error_description", "errorMessage", "error"):
            if body.get(key):
                return str(body[key])
    return None


def send(method: str, url: str, *, body: FormBody | JsonBody | None = None, token: SecretStr | None = None,
         context: ssl.SSLContext | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One HTTP exchange. HTTP errors are returned (status, body); transport failures raise.

    The body is encoded and the bearer token set only here, so no frame of a caller
    holds a credential in plain text."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = body.content_type
    if token is not None:
        headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    request = urllib.request.Request(url, data=body.encode() if body is not None else None, headers=headers,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            return resp.status, _json(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        kind, why = _reason(exc)
        parts = urllib.parse.urlsplit(url)
        origin = public_url(f"{parts.scheme}://{parts.netloc}")
        raise KeycloakApiError(kind, f"Keycloak at {origin} is not reachable: {why}"
                               if kind == "unreachable" else f"Keycloak at {origin}: {why}") from None


def request_token(base_url: str, realm: str, form: Mapping[str, str | SecretStr] | FormBody, *,
                  context: ssl.SSLContext | None = None, timeout: float = 10.0) -> TokenReply:
    """POST the token endpoint; a refused login is a reply (status 400/401), not an exception."""
    url = f"{base_url.rstrip('/')}/realms/{path_segment(realm)}/protocol/openid-connect/token"
    body_in = form if isinstance(form, FormBody) else FormBody(form)
    status, body = send("POST", url, body=body_in, context=context, timeout=timeout)
    return TokenReply(status, body if isinstance(body, Mapping) else {})


class KeycloakRest:
    """Admin REST calls with a token from `grant` in `token_realm`, refreshed before it expires."""

    def __init__(self, base_url: str, token_realm: str, grant: Grant, *, ca_bundle: Path | None = None,
                 verify_tls: bool = True, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_realm = token_realm
        self.grant = grant
        self.timeout = timeout
        self.context = ssl_context(ca_bundle, verify_tls)
        self._clock = clock
        self._access: SecretStr | None = None
        self._access_until = 0.0
        self._refresh: SecretStr | None = None
        self._refresh_until = 0.0

    @property
    def url(self) -> str:
        return public_url(self.base_url)

    def _store(self, reply: TokenReply) -> SecretStr:
        now = self._clock()
        body = reply.body
        self._access = SecretStr(str(body["access_token"]))
        self._access_until = now + float(body.get("expires_in", 60)) - EXPIRY_MARGIN_SECONDS
        refresh = body.get("refresh_token")
        self._refresh = SecretStr(str(refresh)) if refresh else None
        self._refresh_until = now + float(body.get("refresh_expires_in") or 0) - EXPIRY_MARGIN_SECONDS
        return self._access

    def token(self) -> SecretStr:
        """A valid access token: the cached one, else refreshed, else a new grant."""
        now = self._clock()
        if self._access and now < self._access_until:
            return self._access
        if self._refresh and now < self._refresh_until:
            form: dict[str, str | SecretStr] = {"grant_type": "refresh_token", "client_id": self.grant.client_id,
                                                "refresh_token": self._refresh}
            if isinstance(self.grant, ClientCredentials):
                form["client_secret"] = self.grant.client_secret
            reply = request_token(self.base_url, self.token_realm, form, context=self.context, timeout=self.timeout)
            if reply.ok:
                return self._store(reply)
            self._refresh = None  # expired or revoked session: fall back to a new grant
        reply = request_token(self.base_url, self.token_realm, self.grant.form(), context=self.context,
                              timeout=self.timeout)
        if not reply.ok:
            self._access = None
            why = _error_text(reply.body) or f"HTTP {reply.status}"
            if reply.status not in (400, 401):  # e.g. 404 "Realm does not exist": not a credentials problem
                raise KeycloakApiError("http", f"token endpoint of realm {self.token_realm!r} answered HTTP "
                                               f"{reply.status}: {why}", status=reply.status, error=why)
            raise KeycloakApiError(
                "auth", f"Keycloak at {self.url} refused the credentials of {self.grant.describe()} in realm "
                        f"{self.token_realm!r}: {why} (HTTP {reply.status})",
                status=reply.status, error=reply.error)
        return self._store(reply)

    def forget_token(self) -> None:
        self._access = None
        self._refresh = None

    def admin(self, method: str, realm: str, path: str = "", *, body: Any = None,
              params: Mapping[str, Any] | None = None) -> Any:
        """Call /admin/realms/<realm><path>; return the JSON answer (None for 201/204)."""
        url = f"{self.base_url}/admin/realms/{path_segment(realm)}{path}"
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self.call(method, url, body=body)

    def call(self, method: str, url: str, *, body: Any = None) -> Any:
        payload = JsonBody(body) if body is not None else None
        for attempt in (1, 2):
            status, answer = send(method, url, body=payload, token=self.token(), context=self.context,
                                  timeout=self.timeout)
            if status == 401 and attempt == 1:
                self.forget_token()  # revoked or expired early (server restart): one fresh grant
                continue
            if status >= 400:
                why = _error_text(answer) or "no detail"
                kind: ErrorKind = {401: "auth", 403: "forbidden"}.get(status, "http")  # type: ignore[assignment]
                path = urllib.parse.urlsplit(url).path
                raise KeycloakApiError(kind, f"{method} {path} answered HTTP {status}: {why}", status=status,
                                       error=_error_text(answer))
            return answer
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
