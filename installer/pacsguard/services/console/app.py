"""The console's web app (Starlette): alerts with acknowledge/close, an alert's detail, overview charts.

Safety, because it can change alert state:
- it binds 127.0.0.1 by default; bound anywhere else it refuses to start
  without a token (PACSGUARD_CONSOLE_TOKEN or --token-file), which every
  request must then carry (HTTP basic auth with the token as password, or
  `Authorization: Bearer <token>`);
- state changes are POSTs that must carry the page's CSRF token in the
  `X-CSRF-Token` header (a custom header also forces a CORS preflight, which
  the console never grants) and, when the browser sends one, a same-origin
  Origin header;
- the Host header must name the console (no DNS rebinding onto loopback);
- a strict Content-Security-Policy: scripts, styles, fonts, images and
  connections only from the console itself. plotly.js is served from the
  plotly package installed with pacsguard, so nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import importlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings, duration_seconds
from pacsguard.engines.alerts import QUEUE, AlertNotFound
from pacsguard.rules.catalog import all_rules
from pacsguard.rules.compiler import evidence_query
from pacsguard.savedobjects.spec import load_content
from pacsguard.services import alerts as alert_service
from pacsguard.services.console.charts import overview_charts

HERE = Path(__file__).resolve().parent
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
# plotly adds <style> rules at run time, hence 'unsafe-inline' for styles only; scripts stay 'self'.
TIMELINE_SIZE = 200


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConsoleConfig:
    host: str
    port: int
    token: str | None
    csrf: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @classmethod
    def build(cls, host: str = "127.0.0.1", port: int = 8765, token_file: Path | None = None,
              environ: dict[str, str] | None = None) -> ConsoleConfig:
        env = os.environ if environ is None else environ
        token: str | None = None
        if token_file is not None:
            try:
                token = token_file.read_text().strip()
            except OSError as exc:
                raise PacsguardError(f"cannot read the console token file {token_file}: {exc.strerror}") from None
        elif env.get("PACSGUARD_CONSOLE_TOKEN"):
            token = env["PACSGUARD_CONSOLE_TOKEN"].strip()
        if token is not None and len(token) < 16:
            raise PacsguardError("the console token must be at least 16 characters")
        if not _is_loopback(host) and not token:
            raise PacsguardError(f"the console binds {host}, beyond this machine: set PACSGUARD_CONSOLE_TOKEN "
                                 "(>= 16 characters) or --token-file, so every request must carry it")
        return cls(host, port, token, secrets.token_urlsafe(32))

    def allowed_hosts(self) -> list[str]:
        hosts = {self.host, "127.0.0.1", "localhost", "[::1]"} if _is_loopback(self.host) else {self.host}
        return sorted(hosts) if self.host not in ("0.0.0.0", "::") else ["*"]


class SecurityMiddleware:
    """Token auth (when configured), CSRF on state changes, and security headers on every answer."""

    def __init__(self, app: ASGIApp, config: ConsoleConfig) -> None:
        self.app = app
        self.config = config

    def _authorized(self, request: Request) -> bool:
        if not self.config.token:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        given = ""
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip()).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                given = ""
        return hmac.compare_digest(given.encode(), self.config.token.encode())

    def _csrf_ok(self, request: Request) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        if not hmac.compare_digest(request.headers.get("x-csrf-token", "").encode(), self.config.csrf.encode()):
            return False
        origin = request.headers.get("origin")
        return origin is None or origin.rstrip("/") == f"{request.url.scheme}://{request.url.netloc}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response: Response | None = None
        if not self._authorized(request):
            response = Response("authentication required", status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="pacsguard console"'})
        elif not self._csrf_ok(request):
            response = JSONResponse({"ok": False, "error": "missing or wrong CSRF token"}, status_code=403)

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                            (b"cache-control", b"no-store")]
                message = {**message, "headers": headers}
            await send(message)

        if response is not None:
            await response(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)


def _rules_by_signal(settings: Settings) -> dict[str, Any]:
    return {r.signal: r for r in all_rules(settings)}


def _checklist(cluster: Cluster, settings: Settings) -> list[dict[str, Any]] | None:
    """The posture checklist where that service is installed (pacsguard.services.checklist), else None."""
    try:
        module = importlib.import_module("pacsguard.services.checklist")
    except ImportError:
        return None
    return [a.as_dict() for a in module.checklist(cluster, settings)]


def timeline(cluster: Cluster, settings: Settings, field: str, value: str, start: dt.datetime,
             end: dt.datetime) -> list[dict[str, Any]]:
    """The entity's events in [start, end], newest first: what the account (or address) did."""
    term_field = "related.user" if field == "user.name" else field
    res = cluster.request("POST", f"/{settings.index('events_data_stream')}/_search", params={
        "ignore_unavailable": "true"}, body={
        "size": TIMELINE_SIZE, "sort": [{"@timestamp": "desc"}],
        "query": {"bool": {"filter": [{"term": {term_field: value}}, {"range": {"@timestamp": {
            "gte": start.isoformat(), "lte": end.isoformat()}}}]}},
        "_source": ["@timestamp", "event.action", "event.outcome", "user.name", "user.target.name", "source.ip",
                    "source.geo.country_iso_code", "device.id", "pacs.study.count", "pacs.share.recipients",
                    "user.changes.roles"]}, ok_missing=True) or {}
    out = []
    for hit in res.get("hits", {}).get("hits", []):
        src = hit["_source"]
        event, user, source = src.get("event", {}), src.get("user", {}), src.get("source", {})
        out.append({"time": src.get("@timestamp"), "action": event.get("action"), "outcome": event.get("outcome"),
                    "user": user.get("name"), "target": (user.get("target") or {}).get("name"),
                    "ip": source.get("ip"), "country": (source.get("geo") or {}).get("country_iso_code"),
                    "studies": (src.get("pacs") or {}).get("study", {}).get("count")})
    return out


def _parse_time(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def create_app(cluster: Cluster, settings: Settings, config: ConsoleConfig) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    content = load_content()
    rules = _rules_by_signal(settings)

    def page(request: Request, name: str, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, {"csrf": config.csrf, "scope": settings.scope,
                                                          "cluster": cluster.url, **context})

    def index(request: Request) -> Response:
        checklist = _checklist(cluster, settings)
        return page(request, "index.html", checklist=checklist)

    def alert_page(request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        try:
            view = alert_service.show_alert(cluster, settings, alert_id)
        except AlertNotFound as exc:
            return page(request, "missing.html", error=str(exc))
        detail = view.detail or {}
        rule = rules.get(view.signal)
        opened = _parse_time(view.start_time) or dt.datetime.now(dt.timezone.utc)
        window = duration_seconds(detail.get("window") or "1h") if detail.get("window") else 3600
        start = opened - dt.timedelta(seconds=max(window, 3600))
        end = max(_parse_time(detail.get("last_seen_time")) or opened, opened) + dt.timedelta(minutes=30)
        field = (detail.get("entity") or {}).get("field") or (rule.detection.entity if rule else "user.name")
        entity = (view.keys or [view.entity])[0]
        return page(request, "alert.html", alert=view, detail=detail, rule=rule,
                    evidence=detail.get("evidence_query") or (evidence_query(rule, entity) if rule else ""),
                    timeline=timeline(
                        cluster, settings, field, entity, start, end),
                    entity_field=field, entity=entity, start=start, end=end,
                    message=(detail.get("message") or {}).get("text", ""))

    def api_alerts(request: Request) -> Response:
        # the work queue (open and acknowledged, active or cleared) unless states/statuses are asked for
        states = request.query_params.getlist("state") or None
        statuses = request.query_params.getlist("status") or (None if states else list(QUEUE))
        views = alert_service.list_alerts(cluster, settings, states=states, statuses=statuses)
        return JSONResponse({"ok": True, "alerts": [v.as_dict() for v in views]})

    async def api_transition(request: Request) -> Response:
        alert_id, action = request.path_params["alert_id"], request.path_params["action"]
        try:
            body = await request.json()
        except ValueError:
            body = {}
        by = str(body.get("by") or "console")[:100]
        note = str(body.get("note") or "")[:1000]
        func = {"ack": alert_service.acknowledge, "close": alert_service.close}.get(action)
        if func is None:
            return JSONResponse({"ok": False, "error": f"unknown action {action!r}"}, status_code=404)
        try:
            from starlette.concurrency import run_in_threadpool
            view = await run_in_threadpool(func, cluster, settings, alert_id, by, note)
        except AlertNotFound as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=404)
        except PacsguardError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=409)
        return JSONResponse({"ok": True, "alert": view.as_dict()})

    def api_charts(request: Request) -> Response:
        try:
            hours = min(max(int(request.query_params.get("hours", "24")), 1), 24 * 90)
        except ValueError:
            hours = 24
        return JSONResponse({"ok": True, "hours": hours, "charts": overview_charts(cluster, settings, content, hours)})

    def plotly_js(request: Request) -> Response:
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    routes = [
        Route("/", index),
        Route("/alerts/{alert_id}", alert_page),
        Route("/api/alerts", api_alerts),
        Route("/api/alerts/{alert_id}/{action}", api_transition, methods=["POST"]),
        Route("/api/charts", api_charts),
        Route("/static/vendor/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=config.allowed_hosts()),
                  Middleware(SecurityMiddleware, config=config)]
    return Starlette(routes=routes, middleware=middleware)


def serve(cluster: Cluster, settings: Settings, config: ConsoleConfig) -> None:
    import uvicorn

    uvicorn.run(create_app(cluster, settings, config), host=config.host, port=config.port, log_level="warning",
                server_header=False)
