"""The response routine on the local node and the local Keycloak.

A brute force made with real logins (wrong passwords through Keycloak's token
endpoint) is shipped, as the lines Keycloak logged, through the keycloak ingest
pipeline; the pacsguard engine raises 1a; `respond contain --execute` disables the
user for real (its next token request is refused) and ends its sessions; preserve
makes a bundle that verify accepts and that fails after one byte changes; scope
lists exactly the studies of the scenario. Connector failures (Keycloak down,
wrong credentials, unknown user) give one `error:` line, a failed action, and no
other change.
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from keycloak_helpers import LogWatch, RealmUser, event_text, login
from pacsguard.cli import app
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings, load_settings
from pacsguard.devnode import keycloak as devkc
from pacsguard.engines.alerts import AlertStore
from pacsguard.idp.keycloak_rest import KeycloakRest
from pacsguard.response.actions import ActionLog
from pacsguard.services.install import install
from pacsguard.services.watch import Watcher
from typer.testing import CliRunner

pytestmark = [pytest.mark.cluster, pytest.mark.keycloak]
SALT = "respond-salt-0123456789abcdef"


def respond_overrides(base: Settings, kc: devkc.KeycloakState, **connector: Any) -> dict[str, Any]:
    return {"cluster": {"url": base.cluster.url}, "id_prefix": base.id_prefix, "namespace": base.namespace,
            "pseudonymization": {"salt": SALT}, "engine": {"mode": "pacsguard", "renotify_every": "0s"},
            "routing": {"default_owner": "PACS on-call"},
            "connectors": {"keycloak": {"url": kc.url, "realm": kc.realm,
                                        "client_secret_file": str(kc.connector_secret_file), **connector}}}


@pytest.fixture
def env(pack_settings: Settings, keycloak: devkc.KeycloakState, tmp_path: Path) -> Iterator[dict[str, Any]]:
    overrides = respond_overrides(pack_settings, keycloak)
    settings = load_settings(overrides=overrides, environ={})
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(overrides))
    yield {"settings": settings, "cluster": cluster, "file": path, "overrides": overrides}


def cli(settings_file: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--settings", str(settings_file), *args], env={"USER": "ann"})
    return result


def ship(cluster: Cluster, settings: Settings, messages: list[str]) -> None:
    """Index raw events the way a shipper does: the text as `message`, through the pack's router."""
    stream = settings.index("events_data_stream")
    body = "".join(json.dumps({"create": {}}) + "\n" + json.dumps({"message": m}) + "\n" for m in messages)
    res = cluster.client.bulk(index=stream, body=body, params={"refresh": "true"})
    assert not res["errors"], res
    failures = cluster.request("GET", f"/{settings.index('failures')}/_count", ok_missing=True) or {}
    assert failures.get("count", 0) == 0, cluster.request("POST", f"/{settings.index('failures')}/_search")


def brute_force(kc: devkc.KeycloakState, user: RealmUser, tries: int = 8) -> list[str]:
    """A session first (so logout has one to end), then `tries` wrong passwords; the event-file lines."""
    events = LogWatch(kc.event_log)
    assert login(kc, user.username, user.password).ok
    for _ in range(tries):
        assert login(kc, user.username, "Wrong-Password-1").error == "invalid_grant"
    mine = f'username="{user.username}"'
    lines = events.wait_for(lambda t: 'type="LOGIN_ERROR"' in t and mine in t, count=tries)
    assert len(lines) == tries
    return lines


def generic(user: str, action: str, at: dt.datetime, **more: Any) -> str:
    return json.dumps({"timestamp": at.isoformat(), "app": "respond-test", "action": action, "user": user,
                       **more})


def open_alert(cluster: Cluster, settings: Settings, signal: str, entity: str) -> str:
    watcher = Watcher(cluster, settings, run_jobs=False)
    watcher.tick()
    watcher.close()
    found = [a for a in AlertStore(cluster, settings.index("alerts")).search(signal=signal) if a.entity == entity]
    assert found, f"no {signal} alert for {entity}: {watcher.report}"
    return found[0].id


def sessions(admin: KeycloakRest, kc: devkc.KeycloakState, user: RealmUser) -> int:
    return len(admin.admin("GET", kc.realm, f"/users/{user.id}/sessions") or [])


def enabled(admin: KeycloakRest, kc: devkc.KeycloakState, user: RealmUser) -> bool:
    return bool(admin.admin("GET", kc.realm, f"/users/{user.id}")["enabled"])


def test_brute_force_from_real_logins_is_contained_preserved_and_scoped(
        env: dict[str, Any], keycloak: devkc.KeycloakState, kc_admin: KeycloakRest, new_user: Any,
        tmp_path: Path) -> None:
    settings, cluster, sfile = env["settings"], env["cluster"], env["file"]
    victim = new_user(prefix="bf")
    lines = brute_force(keycloak, victim)
    assert all(event_text(line) for line in lines)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    exported = [f"1.2.826.0.1.3680043.8.498.{i}" for i in range(101, 104)]
    viewed = "1.2.826.0.1.3680043.8.498.200"
    ship(cluster, settings, [*lines,
        generic(victim.username, "study-export", now - dt.timedelta(minutes=3), studies=exported[:2],
                export={"destination": "AE_OUTSIDE"}, source_ip="81.2.69.142", patient_id="PAT-1"),
        generic(victim.username, "study-download", now - dt.timedelta(minutes=2), studies=[exported[2]],
                source_ip="81.2.69.142", patient_id="PAT-2"),
        generic(victim.username, "study-view", now - dt.timedelta(minutes=2), studies=[viewed, exported[0]]),
        generic(victim.username, "share-create", now - dt.timedelta(minutes=1), studies=[exported[0]],
                share={"id": "s1", "recipients": ["friend@gmail.example"], "external": True}),
        generic("someone-else", "study-export", now - dt.timedelta(minutes=1), studies=["9.9.9"]),
        generic(victim.username, "study-export", now - dt.timedelta(days=3), studies=["8.8.8"])])
    alert = open_alert(cluster, settings, "1a", victim.username)

    # dry run by default: planned, recorded, nothing changed in Keycloak
    dry = cli(sfile, "respond", "contain", alert)
    assert dry.exit_code == 0, dry.output
    assert "planned   contain keycloak disable-user" in dry.output and "--execute" in dry.output
    assert enabled(kc_admin, keycloak, victim) and sessions(kc_admin, keycloak, victim) == 1

    done = cli(sfile, "respond", "contain", alert, "--execute")
    assert done.exit_code == 0, done.output
    assert f"done      contain keycloak disable-user {victim.username}: disabled {victim.username}" in done.output
    assert f"ended 1 session(s) of {victim.username}" in done.output
    refused = login(keycloak, victim.username, victim.password)
    assert refused.status == 400 and refused.error == "invalid_grant"
    assert not enabled(kc_admin, keycloak, victim) and sessions(kc_admin, keycloak, victim) == 0

    records = ActionLog(cluster, settings.index("actions")).for_alert(alert)
    assert [(r.action, r.result, r.dry_run, r.by) for r in records] == [
        ("disable-user", "planned", True, "ann"), ("logout-user", "planned", True, "ann"),
        ("disable-user", "done", False, "ann"), ("logout-user", "done", False, "ann")]
    assert all(r.target == victim.username and r.alert_id == alert for r in records)

    again = cli(sfile, "respond", "contain", alert, "--execute")
    assert again.exit_code == 0 and "nothing to change" in again.output, again.output

    shown = cli(sfile, "alerts", "show", alert)
    assert shown.exit_code == 0
    assert f"done      contain keycloak disable-user {victim.username}" in shown.output
    walk = cli(sfile, "--json", "respond", alert)
    data = json.loads(walk.output)
    assert [s["step"] for s in data["steps"]] == ["triage", "contain", "preserve", "scope", "reset", "close"]
    assert data["steps"][1]["status"].startswith("done")
    assert sum(1 for h in data["history"] if (h["action"] or {}).get("step") == "contain") == 6

    # preserve: a bundle verify accepts, that fails after one byte is changed
    bundle = tmp_path / "evidence.zip"
    kept = cli(sfile, "respond", "preserve", alert, "--out", str(bundle))
    assert kept.exit_code == 0, kept.output
    with zipfile.ZipFile(bundle) as zf:
        events = [json.loads(x) for x in zf.read("events.ndjson").splitlines()]
        manifest = json.loads(zf.read("manifest.json"))
        rule = json.loads(zf.read("rule.json"))
        assert json.loads(zf.read("alert.json"))["id"] == alert
    assert rule["signal"] == "1a" and rule["version"] >= 1 and len(rule["content_hash"]) >= 12
    assert manifest["collected_by"] == "ann" and manifest["events"] == len(events) == 12  # 8 failed logins + 4 of mine
    assert [e["@timestamp"] for e in events] == sorted(e["@timestamp"] for e in events)
    from_keycloak = [e for e in events if e["pacs"]["source_format"] == "keycloak"]
    assert len(from_keycloak) == 8 and {e["event"]["outcome"] for e in from_keycloak} == {"failure"}
    assert "8.8.8" not in json.dumps(events)  # outside the 24 h window
    assert all("PAT-" not in json.dumps(e) for e in events)  # pseudonymized at ingest
    assert cli(sfile, "respond", "verify", str(bundle)).exit_code == 0

    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(damaged, "w") as dst:
        for info in src.infolist():
            data_bytes = src.read(info)
            if info.filename == "events.ndjson":
                data_bytes = data_bytes.replace(b"AE_OUTSIDE", b"AE_OUTSIDF", 1)
            dst.writestr(info, data_bytes)
    bad = cli(sfile, "respond", "verify", str(damaged))
    assert bad.exit_code == 1 and "events.ndjson was changed" in bad.output, bad.output
    raw = bytearray(bundle.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    flipped = tmp_path / "flipped.zip"
    flipped.write_bytes(bytes(raw))
    (tmp_path / "flipped.zip.sha256").write_text((tmp_path / "evidence.zip.sha256").read_text())
    assert cli(sfile, "respond", "verify", str(flipped)).exit_code == 1

    # scope: exactly the studies of the scenario
    scoped = cli(sfile, "--json", "respond", "scope", alert)
    report = json.loads(scoped.output)
    assert report["studies"]["exported"] == {"count": 3, "uids": sorted(exported)}
    assert report["studies"]["viewed"] == {"count": 2, "uids": sorted([viewed, exported[0]])}
    assert report["studies"]["shared"] == {"count": 1, "uids": [exported[0]]}
    assert report["studies"]["deleted"] == {"count": 0, "uids": []}
    assert report["distinct_studies"]["count"] == 4
    assert report["patients"]["count"] == 2 and all(len(h) == 64 for h in report["patients"]["id_hashes"])
    assert report["export_destinations"] == [{"destination": "AE_OUTSIDE", "events": 1}]
    assert report["share_recipients"] == [{"recipient": "friend@gmail.example", "shares": 1, "external": True}]
    assert {ip["ip"]: ip["countries"] for ip in report["source_ips"]}["81.2.69.142"] == ["GB"]
    text = cli(sfile, "respond", "scope", alert).output
    assert "friend@gmail.example [EXTERNAL]" in text and "studies exported     3" in text

    # reset: the checklist and the connector action that can do it (dry run)
    reset = cli(sfile, "respond", "reset", alert)
    assert reset.exit_code == 0
    assert f"planned   reset keycloak require-password-update {victim.username}" in reset.output
    assert "rotate: Reset the password" in reset.output


def test_connector_failures_give_one_error_line_and_change_nothing_else(
        env: dict[str, Any], keycloak: devkc.KeycloakState, kc_admin: KeycloakRest, new_user: Any,
        tmp_path: Path) -> None:
    settings, cluster = env["settings"], env["cluster"]
    user = new_user(prefix="cf")
    assert login(keycloak, user.username, user.password).ok
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    ghost = f"ghost-{user.username}"
    ship(cluster, settings, [generic(name, "user-login", now - dt.timedelta(seconds=i), outcome="failure")
                             for name in (user.username, ghost) for i in range(8)])
    real_alert = open_alert(cluster, settings, "1a", user.username)
    ghost_alert = open_alert(cluster, settings, "1a", ghost)
    log = ActionLog(cluster, settings.index("actions"))

    def run(alert: str, **connector: Any) -> Any:
        path = tmp_path / f"s{len(connector)}{alert[-4:]}.yaml"
        path.write_text(yaml.safe_dump(respond_overrides(settings, keycloak, **connector)))
        before = len(log.for_alert(alert))
        result = cli(path, "respond", "contain", alert, "--execute")
        assert result.exit_code == 1
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.output
        new = log.for_alert(alert)[before:]
        assert [(r.action, r.result) for r in new] == [("disable-user", "failed")], new
        return errors[0], new[0]

    secret = tmp_path / "wrong-secret"
    secret.write_text("not-the-secret")
    cases = {
        "down": ({"url": "http://127.0.0.1:9"}, "is not reachable: connection refused"),
        "credentials": ({"client_secret_file": str(secret)}, "refused the credentials"),
    }
    for name, (connector, expected) in cases.items():
        line, rec = run(real_alert, **connector)
        assert expected in line and expected in (rec.error or ""), (name, line)
        assert "not-the-secret" not in line
    assert enabled(kc_admin, keycloak, user) and sessions(kc_admin, keycloak, user) == 1
    line, rec = run(ghost_alert)
    assert "no such user" in line and rec.target == ghost
    history = AlertStore(cluster, settings.index("alerts")).get(real_alert).source["history"]
    assert [h["action"]["result"] for h in history if h.get("action")] == ["failed", "failed"]


class HookReceiver:
    """Records signed webhook requests; answers `status` (200 unless told otherwise)."""

    def __init__(self, secret: str) -> None:
        import hashlib
        import hmac
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict[str, Any]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                signed = hmac.compare_digest(want, self.headers.get("X-Pacsguard-Signature", ""))
                outer.requests.append({"signed": signed, "key": self.headers.get("Idempotency-Key"),
                                       "body": json.loads(body)})
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/soar"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_webhook_connector_asks_once_signed_and_records_a_refusal(
        pack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "soar-signing-secret-0123456789"
    monkeypatch.setenv("PG_SOAR_SECRET", secret)
    hook = HookReceiver(secret)
    overrides = {"cluster": {"url": pack_settings.cluster.url}, "id_prefix": pack_settings.id_prefix,
                 "namespace": pack_settings.namespace, "pseudonymization": {"salt": SALT},
                 "engine": {"mode": "pacsguard", "renotify_every": "0s"},
                 "routing": {"default_owner": "PACS on-call", "routes": [{"owner": "PACS on-call", "channels": []}]},
                 "notifications": {"channels": [{"name": "soar", "type": "webhook", "url": hook.url,
                                                 "secret_env": "PG_SOAR_SECRET"}],
                                   "delivery": {"max_attempts": 1}},
                 "connectors": {"webhooks": [{"name": "expire-shares", "channel": "soar", "step": "contain",
                                              "signals": ["1a"],
                                              "action": "expire every share link created by {entity}"}]}}
    settings = load_settings(overrides=overrides, environ={"PG_SOAR_SECRET": secret})
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    ship(cluster, settings, [generic(u, "user-login", now - dt.timedelta(seconds=i), outcome="failure")
                             for u in ("sharer", "other") for i in range(8)])
    alert = open_alert(cluster, settings, "1a", "sharer")
    other = open_alert(cluster, settings, "1a", "other")
    assert hook.requests == []  # the route sends alerts nowhere: only the connector talks to the receiver
    sfile = tmp_path / "s.yaml"
    sfile.write_text(yaml.safe_dump(overrides))
    store = AlertStore(cluster, settings.index("alerts"))
    stale = store.get(alert)  # as a `watch` running alongside holds it

    dry = cli(sfile, "respond", "contain", alert)
    assert "would ask soar to: expire every share link created by sharer" in dry.output and hook.requests == []
    assert "by hand: disable sharer" in dry.output  # no Keycloak connector here
    done = cli(sfile, "respond", "contain", alert, "--execute")
    assert done.exit_code == 0, done.output
    assert len(hook.requests) == 1 and hook.requests[0]["signed"]
    body = hook.requests[0]["body"]
    assert body["alert"]["response"] == {"step": "contain", "connector": "webhook:expire-shares",
                                         "action": "expire every share link created by sharer", "target": "sharer"}
    assert body["alert"]["id"] == alert and hook.requests[0]["key"] == f"{alert}.contain.expire-shares"
    again = cli(sfile, "respond", "contain", alert, "--execute")
    assert "nothing to change" in again.output and len(hook.requests) == 1
    # a writer that ignores the alert's version (a hand edit in Dev Tools, say) may drop history
    # entries; the actions index keeps them and `alerts show` lists them
    cluster.request("PUT", f"/{settings.index('alerts')}/_doc/{alert}", body=stale.source,
                    params={"refresh": "true"})
    shown = cli(sfile, "alerts", "show", alert)
    assert "done      contain webhook:expire-shares expire-shares sharer: asked soar" in shown.output, shown.output

    hook.status = 403
    refused = cli(sfile, "respond", "contain", other, "--execute")
    assert refused.exit_code == 1
    assert [x for x in refused.output.splitlines() if x.startswith("error:")] == [refused.output.strip()
                                                                                   .splitlines()[-1]]
    assert "webhook:expire-shares: cannot ask for" in refused.output and "HTTP 403" in refused.output
    records = ActionLog(cluster, settings.index("actions")).for_alert(other)
    assert [(r.result, r.dry_run) for r in records] == [("failed", False)]
    hook.server.shutdown()


def test_an_admin_grant_is_taken_back_by_contain_and_reset_finds_nothing_left(
        env: dict[str, Any], keycloak: devkc.KeycloakState, kc_admin: KeycloakRest, new_user: Any) -> None:
    settings, cluster, sfile = env["settings"], env["cluster"], env["file"]
    target = new_user(prefix="rg")
    assert devkc.grant_realm_roles(kc_admin, keycloak.realm, target.id, ["pacs-admin"]) == ["pacs-admin"]
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    ship(cluster, settings, [generic("it.admin", "role-grant", now, target_user=target.username,
                                     roles_changed=["pacs-admin"])])
    alert = open_alert(cluster, settings, "3", f"it.admin|role-grant|{target.username}")

    def roles() -> set[str]:
        return {r["name"] for r in kc_admin.admin("GET", keycloak.realm,
                                                  f"/users/{target.id}/role-mappings/realm") or []}

    planned = f"reset keycloak remove-realm-role {target.username}:pacs-admin"
    dry = cli(sfile, "respond", "reset", alert)
    assert f"planned   {planned}" in dry.output and "reset it.admin's credentials" in dry.output, dry.output
    contain_dry = cli(sfile, "respond", "contain", alert)
    assert f"planned   contain keycloak remove-realm-role {target.username}:pacs-admin" in contain_dry.output
    assert "disable-user" not in contain_dry.output  # the actor is not locked out for a grant
    assert "pacs-admin" in roles()
    done = cli(sfile, "respond", "contain", alert, "--execute")
    assert done.exit_code == 0, done.output
    assert f"removed realm role 'pacs-admin' from {target.username}" in done.output
    assert "pacs-admin" not in roles()
    after = cli(sfile, "respond", "reset", alert, "--execute")
    assert after.exit_code == 0 and f"unchanged {planned}" in after.output
    assert "nothing to change" in after.output
