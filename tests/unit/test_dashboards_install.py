"""`pacsguard install --dashboards-url` and `pacsguard dashboards ...` against a local stand-in.

OpenSearch Dashboards cannot run on these machines (DESIGN.md D10), so this
checks only the request shape and the plan/stamp/uninstall discipline: the
stand-in below answers the saved objects API the way Dashboards 2.19
documents it (status, get, _find, multipart _import with osd-xsrf, delete, and
missing references refused), keeps what it is sent, and records every request.
It is not evidence that Dashboards draws the objects.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pacsguard.cli import app
from pacsguard.core.dashboards import Dashboards, DashboardsSettings
from pacsguard.core.errors import ConnectionProblem
from pacsguard.core.settings import load_settings
from pacsguard.packobjects import Stamp
from pacsguard.savedobjects import owned
from pacsguard.services import dashboards as svc
from pydantic import SecretStr
from typer.testing import CliRunner


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class StandIn:
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def imports(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/api/saved_objects/_import"]


def _multipart_file(headers: dict[str, str], body: bytes) -> tuple[str | None, str | None, bytes]:
    """(field name, filename, content) of the one part, parsed with the standard library."""
    raw = f"Content-Type: {headers['content-type']}\r\n\r\n".encode() + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    part = next(iter(message.iter_parts()))
    disposition = part.get("content-disposition", "")
    name = re.search(r'name="([^"]+)"', disposition)
    filename = re.search(r'filename="([^"]+)"', disposition)
    return (name[1] if name else None, filename[1] if filename else None, part.get_payload(decode=True))


def make_handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> Recorded:
            length = int(self.headers.get("content-length") or 0)
            parts = urlsplit(self.path)
            rec = Recorded(self.command, parts.path, parse_qs(parts.query),
                           {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
            state.requests.append(rec)
            return rec

        def do_GET(self) -> None:
            rec = self._record()
            if rec.path == "/api/status":
                return self._send(200, {"name": "stand-in", "version": {"number": "2.19.0"}})
            if rec.path == "/api/saved_objects/_find":
                types = rec.query.get("type", [])
                found = [o for (t, _), o in state.objects.items() if t in types]
                return self._send(200, {"page": 1, "per_page": 10000, "total": len(found), "saved_objects": found})
            match = re.fullmatch(r"/api/saved_objects/([^/]+)/([^/]+)", rec.path)
            if match and (match[1], match[2]) in state.objects:
                return self._send(200, state.objects[(match[1], match[2])])
            return self._send(404, {"statusCode": 404, "error": "Not Found",
                                    "message": f"Saved object [{rec.path}] not found"})

        def do_POST(self) -> None:
            rec = self._record()
            if rec.headers.get("osd-xsrf") != "true":
                return self._send(400, {"statusCode": 400, "error": "Bad Request",
                                        "message": "Request must contain a osd-xsrf header."})
            if rec.path != "/api/saved_objects/_import":
                return self._send(404, {"statusCode": 404})
            name, filename, content = _multipart_file(rec.headers, rec.body)
            if name != "file" or not (filename or "").endswith(".ndjson"):
                return self._send(400, {"statusCode": 400, "message": "[request body.file]: expected a file"})
            items = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
            keys = {(o["type"], o["id"]) for o in items} | set(state.objects)
            errors = [{"type": o["type"], "id": o["id"], "error": {"type": "missing_references"}}
                      for o in items if any((r["type"], r["id"]) not in keys for r in o["references"])]
            if not errors:
                for o in items:
                    state.objects[(o["type"], o["id"])] = {**o, "updated_at": "2026-12-01T00:00:00Z",
                                                           "version": "WzEsMV0="}
            return self._send(200, {"success": not errors, "successCount": 0 if errors else len(items),
                                    "errors": errors,
                                    "successResults": [] if errors else [{"type": o["type"], "id": o["id"]}
                                                                        for o in items]})

        def do_DELETE(self) -> None:
            rec = self._record()
            match = re.fullmatch(r"/api/saved_objects/([^/]+)/([^/]+)", rec.path)
            if rec.headers.get("osd-xsrf") != "true" or not match:
                return self._send(400, {"statusCode": 400})
            if state.objects.pop((match[1], match[2]), None) is None:
                return self._send(404, {"statusCode": 404})
            return self._send(200, {})

    return Handler


@pytest.fixture
def standin() -> Iterator[StandIn]:
    state = StandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def connection(url: str, **extra: Any) -> Dashboards:
    return Dashboards(DashboardsSettings(url, **extra))


SETTINGS = load_settings(environ={})


def test_install_imports_every_object_once_with_the_documented_request(standin: StandIn) -> None:
    conn = connection(standin.url, username="pacsguard-installer", password=SecretStr("s3cret-pw"), tenant="global")
    result = svc.install(conn, SETTINGS)
    wanted = svc.desired_objects(SETTINGS)
    assert result.plan.summary()["create"] == len(wanted) and len(standin.objects) == len(wanted)
    (request,) = standin.imports()
    assert request.method == "POST" and request.query == {"overwrite": ["true"]}
    assert request.headers["osd-xsrf"] == "true" and request.headers["securitytenant"] == "global"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"pacsguard-installer:s3cret-pw").decode()
    name, filename, content = _multipart_file(request.headers, request.body)
    assert name == "file" and filename == "pacsguard.ndjson"
    sent = [json.loads(line) for line in content.decode().splitlines()]
    assert {(o["type"], o["id"]) for o in sent} == {(o.kind, o.id) for o in wanted}
    assert all(owned.stamp_of(o) is not None and owned.stamp_of(o).owner == "pacsguard/default" for o in sent)

    again = svc.install(conn, SETTINGS)
    assert again.plan.summary()["unchanged"] == len(wanted) and not again.plan.pending
    assert len(standin.imports()) == 1, "a second install imported again"
    assert {r.state for r in svc.status(conn, SETTINGS)} == {"ok"}


def test_hand_edit_is_drift_content_change_is_an_update_and_orphans_go(standin: StandIn) -> None:
    conn = connection(standin.url)
    svc.install(conn, SETTINGS)
    key = ("dashboard", "pacsguard-default-dash-logins")
    standin.objects[key]["attributes"]["title"] = "Logins (edited)"
    assert [r.id for r in svc.status(conn, SETTINGS) if r.state == "drifted"] == [key[1]]
    # an object whose stamp is older (other hash) is updated; one no longer in the content is deleted;
    # one stamped by another installation is left alone
    vis = ("visualization", "pacsguard-default-vis-logins-map")
    standin.objects[vis] = owned.stamped(standin.objects[vis], Stamp("pacsguard/default", "0.0.1", "0" * 16))
    gone = ("visualization", "pacsguard-default-vis-retired")
    other = ("visualization", "pacsguard-radiology-vis-logins-map")
    standin.objects[gone] = owned.stamped({"type": "visualization", "id": gone[1], "attributes": {
        "title": "old"}, "references": []}, Stamp("pacsguard/default", "0.0.1", "1" * 16))
    standin.objects[other] = owned.stamped({"type": "visualization", "id": other[1], "attributes": {
        "title": "theirs"}, "references": []}, Stamp("pacsguard/radiology", "0.1.0", "2" * 16))
    plan = svc.install(conn, SETTINGS, dry_run=True).plan
    assert {(c.action, c.id) for c in plan.pending} == {("update", vis[1]), ("delete", gone[1])}
    svc.install(conn, SETTINGS)
    assert gone not in standin.objects and other in standin.objects
    assert owned.stamp_of(standin.objects[vis]).version != "0.0.1"
    removed = svc.uninstall(conn, SETTINGS)
    assert len(removed) == len(svc.desired_objects(SETTINGS))
    assert list(standin.objects) == [other]
    assert removed[0][0] == "dashboard" and removed[-1][0] == "index-pattern"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_dashboards_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(ConnectionProblem, match=rf"^cannot reach OpenSearch Dashboards at {url}: "):
        connection(url).status()
    result = CliRunner().invoke(app, ["--url", "http://127.0.0.1:9", "install", "--dashboards-url", url])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach OpenSearch Dashboards at {url}")
    assert "Traceback" not in result.output


def test_something_else_answering_is_named(standin: StandIn) -> None:
    with pytest.raises(Exception, match="does not look like OpenSearch Dashboards"):
        svc.install(connection(standin.url + "/not-dashboards"), SETTINGS)


def test_password_never_printed(standin: StandIn, tmp_path: Any) -> None:
    secret = tmp_path / "pw"
    secret.write_text("very-secret-password\n")
    result = CliRunner().invoke(app, ["--json", "dashboards", "install", "--dashboards-url", standin.url,
                                      "--dashboards-username", "installer", "--dashboards-password-file",
                                      str(secret)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["create"] > 30
    assert "very-secret-password" not in result.output
    assert standin.imports()[0].headers["authorization"].startswith("Basic ")


def test_diff_shows_a_hand_edit_readably(standin: StandIn) -> None:
    svc.install(connection(standin.url), SETTINGS)
    key = ("visualization", "pacsguard-default-vis-logins-failures-by-user")
    obj = standin.objects[key]
    state = json.loads(obj["attributes"]["visState"])
    state["aggs"][1]["params"]["size"] = 3
    obj["attributes"]["visState"] = json.dumps(state)
    # a hand edit keeps the stamp: install sees no change (status reports drift), diff after a content
    # change shows it; simulate the content change with an older stamp
    standin.objects[key] = owned.stamped(obj, Stamp("pacsguard/default", "0.0.1", "0" * 16))
    result = CliRunner().invoke(app, ["dashboards", "diff", "--dashboards-url", standin.url])
    assert result.exit_code == 0, result.output
    assert f"--- dashboards/visualization/{key[1]}" in result.output
    assert re.search(r'^-\s+"size": 3$', result.output, re.MULTILINE) and re.search(r'^\+\s+"size": 15$', result.output, re.MULTILINE)
