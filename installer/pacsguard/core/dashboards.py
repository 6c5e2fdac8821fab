"""A connection to OpenSearch Dashboards' saved objects API: its own URL, TLS, credentials and tenant.

Dashboards is a separate server from the cluster (often behind another proxy,
with its own certificate), so it has options of its own. Every request carries
`osd-xsrf: true` (Dashboards refuses state-changing calls without it) and, where
the Security plugin's multi-tenancy is used, `securitytenant: <tenant>` so the
objects land in the tenant analysts open.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
from pydantic import SecretStr

from pacsguard.core.errors import ConnectionProblem, PacsguardError

XSRF_HEADER = {"osd-xsrf": "true"}
TENANT_HEADER = "securitytenant"


class DashboardsError(PacsguardError):
    """Dashboards answered, but refused the request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DashboardsSettings:
    url: str
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    ca_bundle: Path | None = None
    verify_tls: bool = True
    tenant: str | None = None
    timeout_seconds: float = 30.0


def _public(url: str) -> str:
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path.rstrip('/')}"


class Dashboards:
    def __init__(self, settings: DashboardsSettings) -> None:
        scheme = urlsplit(settings.url).scheme
        if scheme not in ("http", "https"):
            raise PacsguardError(f"--dashboards-url must start with http:// or https://, got {_public(settings.url)!r}")
        if settings.username and settings.password is None:
            raise PacsguardError("Dashboards user given without a password: set PACSGUARD_DASHBOARDS_PASSWORD "
                                 "or --dashboards-password-file")
        if settings.ca_bundle and not settings.ca_bundle.exists():
            raise PacsguardError(f"Dashboards CA bundle {settings.ca_bundle} does not exist")
        self.settings = settings
        self.base = settings.url.rstrip("/")
        kwargs: dict[str, Any] = {"timeout": urllib3.Timeout(total=settings.timeout_seconds), "retries": False}
        if scheme == "https":
            if settings.verify_tls:
                kwargs.update(cert_reqs="CERT_REQUIRED", ca_certs=str(settings.ca_bundle) if settings.ca_bundle
                              else None)
                if not settings.ca_bundle:
                    kwargs["ssl_context"] = ssl.create_default_context()
            else:
                kwargs.update(cert_reqs="CERT_NONE", assert_hostname=False)
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.pool = urllib3.PoolManager(**kwargs)

    @property
    def url(self) -> str:
        return _public(self.settings.url)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(XSRF_HEADER)
        if self.settings.tenant:
            headers[TENANT_HEADER] = self.settings.tenant
        if self.settings.username and self.settings.password is not None:
            headers.update(urllib3.make_headers(
                basic_auth=f"{self.settings.username}:{self.settings.password.get_secret_value()}"))
        headers.update(extra or {})
        return headers

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                ok_missing: bool = False, raw: bytes | None = None, content_type: str | None = None) -> Any:
        """Call the API; JSON in and out. A 404 with ok_missing returns None."""
        url = self.base + path + (("?" + urlencode(params, doseq=True)) if params else "")
        extra: dict[str, str] = {}
        data: bytes | None = raw
        if body is not None:
            data, extra["content-type"] = json.dumps(body).encode(), "application/json"
        if content_type:
            extra["content-type"] = content_type
        try:
            res = self.pool.request(method, url, body=data, headers=self._headers(extra), redirect=False)
        except urllib3.exceptions.SSLError:
            raise ConnectionProblem(f"TLS to Dashboards {self.url} failed: certificate verify failed. Give its CA "
                                    "with --dashboards-ca-bundle") from None
        except urllib3.exceptions.HTTPError as exc:
            reason = str(getattr(exc, "reason", None) or exc).split(": ")[-1][:160]
            raise ConnectionProblem(f"cannot reach OpenSearch Dashboards at {self.url}: {reason}") from None
        if res.status == 404 and ok_missing:
            return None
        if res.status == 401:
            raise ConnectionProblem(f"Dashboards {self.url} refused the credentials (HTTP 401) for "
                                    f"{self.settings.username or 'anonymous'!r}")
        if res.status >= 300:
            text = res.data.decode(errors="replace")
            try:
                message = json.loads(text).get("message", text)
            except (ValueError, AttributeError):
                message = text
            if res.status in (302, 303, 307) or "<html" in text[:200].lower():
                message = "not the Dashboards API (a login page or proxy answered): check the URL and credentials"
            raise DashboardsError(res.status, f"{method} {path} at Dashboards {self.url} failed (HTTP "
                                              f"{res.status}): {str(message)[:300]}")
        if not res.data:
            return {}
        try:
            return json.loads(res.data)
        except ValueError:
            raise DashboardsError(res.status, f"{method} {path} at {self.url} did not answer JSON: is this "
                                              "OpenSearch Dashboards?") from None

    def status(self) -> dict[str, Any]:
        """GET /api/status: proves it is Dashboards and which version."""
        res: dict[str, Any] = self.request("GET", "/api/status")
        return res

    def import_ndjson(self, ndjson: str, overwrite: bool = True) -> dict[str, Any]:
        """POST /api/saved_objects/_import (multipart field `file`)."""
        fields = {"file": ("pacsguard.ndjson", ndjson.encode(), "application/ndjson")}
        body, content_type = urllib3.encode_multipart_formdata(fields)
        res: dict[str, Any] = self.request("POST", "/api/saved_objects/_import",
                                           params={"overwrite": "true" if overwrite else "false"}, raw=body,
                                           content_type=content_type)
        return res
