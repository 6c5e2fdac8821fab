"""A connection to the cluster, with failures translated into one clear line.

Every caller goes through Cluster.request so a refused connection, an untrusted
certificate or a wrong password reads the same everywhere, and credentials are
never part of a message.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opensearchpy import OpenSearch
from opensearchpy import exceptions as osx

from pacsguard.core.errors import ConnectionProblem, MissingPlugin, PacsguardError

# opensearch-py logs every non-2xx (404s are normal here) as a warning; our errors say it better.
logging.getLogger("opensearch").setLevel(logging.CRITICAL)
from pacsguard.core.settings import ClusterSettings

# Plugins the pack needs, by the name _cat/plugins shows, and what needs them.
REQUIRED_PLUGINS = {
    "opensearch-alerting": "detection monitors (signals 1a-5b)",
    "opensearch-notifications": "alert channels (webhook, Slack, email)",
}
# Modules the ingest pipelines need.
REQUIRED_MODULES = {
    "lang-painless": "pipeline scripts",
    "ingest-common": "ingest processors",
    "ingest-user-agent": "user_agent enrichment",
}


class ApiError(PacsguardError):
    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def _public_url(url: str) -> str:
    """The URL without any user:password@ part, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


LOCAL_NODE_HOSTS = ("127.0.0.1", "localhost", "::1")
LOCAL_NODE_PORT = 9200


def unreachable_hint(url: str) -> str:
    """What starts the node when the URL is where `pacsguard up` puts it (http on loopback); else nothing."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOCAL_NODE_HOSTS:
        return ""
    port = parts.port or 80
    if port == LOCAL_NODE_PORT:
        return "; is the local node down? start it with: make up (or pacsguard up)"
    return f"; is the local node down? start it with: pacsguard up --port {port}"


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "info", None) or exc)
    for marker in ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "self-signed", "self signed"):
        if marker.lower() in text.lower():
            return "certificate verify failed"
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if marker.lower() in text.lower():
            return marker.lower()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


def _error_detail(info: Any) -> str:
    if isinstance(info, dict):
        err = info.get("error")
        if isinstance(err, dict):
            detail = str(err.get("reason") or err.get("type") or err)
            if err.get("processor_tag"):
                detail += f" in processor {err.get('processor_type')} [{err['processor_tag']}]"
            cause = err.get("caused_by")
            if isinstance(cause, dict) and cause.get("reason"):
                detail += f": {cause['reason']}"
            stack = err.get("script_stack")
            if isinstance(stack, list) and stack:
                detail += " near " + " ".join(str(s).strip() for s in stack[:1])
            return detail
        if err:
            return str(err)
    return str(info)[:300]


@dataclass
class Cluster:
    settings: ClusterSettings
    client: OpenSearch
    _components: tuple[set[str], set[str]] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return _public_url(self.settings.url)

    @classmethod
    def connect(cls, settings: ClusterSettings) -> Cluster:
        url = settings.url
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise PacsguardError(f"cluster.url must start with http:// or https://, got {_public_url(url)!r}")
        # pool_maxsize: `watch` runs rules, deliveries and jobs in threads that share the client
        kwargs: dict[str, Any] = {"hosts": [url], "timeout": settings.timeout_seconds, "max_retries": 0,
                                  "pool_maxsize": 8}
        if settings.auth == "basic":
            password = settings.resolved_password()
            if not settings.username or password is None:
                raise PacsguardError(
                    "cluster.auth is basic but username or password is missing "
                    "(set PACSGUARD_CLUSTER__USERNAME and PACSGUARD_CLUSTER__PASSWORD or password_file)"
                )
            kwargs["http_auth"] = (settings.username, password.get_secret_value())
        if scheme == "https":
            kwargs["use_ssl"] = True
            kwargs["verify_certs"] = settings.verify_tls
            kwargs["ssl_show_warn"] = False
            if settings.ca_bundle:
                if not settings.ca_bundle.exists():
                    raise PacsguardError(f"cluster.ca_bundle {settings.ca_bundle} does not exist")
                kwargs["ca_certs"] = str(settings.ca_bundle)
            if not settings.verify_tls:
                kwargs["ssl_assert_hostname"] = False
                warnings.filterwarnings("ignore", message=".*Unverified HTTPS.*")
        return cls(settings, OpenSearch(**kwargs))

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                ok_missing: bool = False) -> Any:
        """Call the REST API. With ok_missing a 404 returns None instead of raising."""
        try:
            return self.client.transport.perform_request(method, path, body=body, params=params)
        except osx.SSLError as exc:
            raise ConnectionProblem(
                f"TLS to {self.url} failed: {_reason(exc)}. Give the cluster's CA with "
                "cluster.ca_bundle / --ca-bundle (or, for a throwaway test cluster only, --insecure)."
            ) from None
        except osx.ConnectionTimeout:
            raise ConnectionProblem(f"{self.url} did not answer within {self.settings.timeout_seconds:.0f}s") from None
        except osx.ConnectionError as exc:
            reason = _reason(exc)
            hint = unreachable_hint(self.url) if reason == "connection refused" else ""
            raise ConnectionProblem(f"cannot reach {self.url}: {reason}{hint}") from None
        except osx.TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 0
            if status == 404 and ok_missing:
                return None
            if status == 401:
                who = self.settings.username or "anonymous"
                raise ConnectionProblem(
                    f"authentication failed at {self.url} for user {who!r} (HTTP 401): check the password"
                ) from None
            if status == 403:
                raise ConnectionProblem(
                    f"{method} {path} forbidden at {self.url} (HTTP 403): the user lacks a permission: "
                    f"{_error_detail(exc.info)}"
                ) from None
            raise ApiError(status, f"{method} {path} failed (HTTP {status}): {_error_detail(exc.info)}",
                           exc.info) from None

    def exists(self, path: str) -> bool:
        """HEAD <path>: True on 200, False on 404."""
        return bool(self.request("HEAD", path, ok_missing=True))

    # ---------------------------------------------------------- facts

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/")
        return result

    def installed_components(self) -> tuple[set[str], set[str]]:
        """(plugins, modules) the cluster's nodes really run. Asked once per
        connection: plugins only change with a node restart."""
        if self._components is None:
            nodes = self.request("GET", "/_nodes/plugins")["nodes"]
            plugins: set[str] = set()
            modules: set[str] = set()
            for node in nodes.values():
                plugins.update(p["name"] for p in node.get("plugins", []))
                modules.update(m["name"] for m in node.get("modules", []))
            self._components = (plugins, modules)
        return set(self._components[0]), set(self._components[1])

    def require_plugins(self, names: dict[str, str]) -> None:
        plugins, modules = self.installed_components()
        present = plugins | modules
        missing = {name: why for name, why in names.items() if name not in present}
        if missing:
            listed = ", ".join(f"{n} (needed for {why})" for n, why in missing.items())
            raise MissingPlugin(
                f"{self.url} lacks {listed}. Install the plugin on every node "
                "(bin/opensearch-plugin install ...) or use a distribution that bundles it."
            )

