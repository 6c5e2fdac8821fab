"""`pacsguard checklist` on scenario clusters: one where every item fails and one where every
item passes, each answered from the data the scenario put there (events, alerts, the engine's
rule status, the local Keycloak's credentials, the TLS in front of the node)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pacsguard.cli import app
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings, load_settings
from pacsguard.devnode import keycloak as devkc
from pacsguard.idp.keycloak_rest import KeycloakRest
from pacsguard.services.alerts import acknowledge, list_alerts
from pacsguard.services.checklist import checklist
from pacsguard.services.install import install
from pacsguard.services.watch import Watcher
from tlsproxy import TlsProxy, start_proxy
from typer.testing import CliRunner

pytestmark = [pytest.mark.cluster, pytest.mark.keycloak]
KEYS = ["unique-logins", "least-privilege", "mfa", "alerts-logins", "alerts-admin-changes",
        "alerts-export-sharing", "encryption", "response-owner"]


def login_event(user: str, at: dt.datetime, ip: str, roles: list[str], outcome: str = "success",
                device: str | None = None) -> str:
    return json.dumps({"timestamp": at.isoformat(), "app": "checklist-test", "action": "user-login",
                       "outcome": outcome, "user": user, "roles": roles, "source_ip": ip,
                       "device_id": device or f"dev-{user}"})


def ship(cluster: Cluster, settings: Settings, messages: list[str]) -> None:
    body = "".join(json.dumps({"create": {}}) + "\n" + json.dumps({"message": m}) + "\n" for m in messages)
    res = cluster.client.bulk(index=settings.index("events_data_stream"), body=body, params={"refresh": "true"})
    assert not res["errors"], res


def admin_with_otp(kc_admin: KeycloakRest, realm: str) -> str:
    """A realm user with a TOTP credential (partial import is the admin API's way to give one)."""
    name = f"adm{uuid.uuid4().hex[:8]}"
    secret = base64.b32encode(os.urandom(10)).decode()
    kc_admin.admin("POST", realm, "/partialImport", body={"ifResourceExists": "FAIL", "users": [{
        "username": name, "enabled": True, "email": f"{name}@pacs.example.org", "firstName": "A", "lastName": "D",
        "credentials": [{"type": "otp", "userLabel": "phone", "secretData": json.dumps({"value": secret}),
                         "credentialData": json.dumps({"subType": "totp", "digits": 6, "counter": 0, "period": 30,
                                                       "algorithm": "HmacSHA1"})}]}]})
    return name


@pytest.fixture
def tls_front(cluster_url: str, keycloak: devkc.KeycloakState,
              tmp_path: Path) -> Iterator[tuple[TlsProxy, TlsProxy]]:
    """HTTPS in front of the node and of Keycloak, each with its own throwaway CA."""
    for name in ("node", "kc"):
        (tmp_path / name).mkdir()
    node = start_proxy(cluster_url, tmp_path / "node", None, None)
    kc = start_proxy(keycloak.url, tmp_path / "kc", None, None)
    yield node, kc
    node.server.shutdown()
    kc.server.shutdown()


def statuses(answers: list[Any]) -> dict[str, str]:
    return {a.key: a.status for a in answers}


def test_every_item_fails_on_a_careless_installation(pack_settings: Settings, keycloak: devkc.KeycloakState,
                                                     new_user: Any, tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={
        "cluster": {"url": pack_settings.cluster.url}, "id_prefix": pack_settings.id_prefix,
        "namespace": pack_settings.namespace, "pseudonymization": {"salt": "checklist-salt-0123456789"},
        "engine": {"mode": "pacsguard"},
        "connectors": {"keycloak": {"url": keycloak.url, "realm": keycloak.realm,
                                    "client_secret_file": str(keycloak.connector_secret_file)}}})
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    admins = [new_user(roles=["pacs-admin"], prefix="ca").username for _ in range(2)]
    hour_ago = now - dt.timedelta(hours=1)
    ship(cluster, settings, [
        # one generic account, from Britain and the US within the same hour
        login_event("radiology", now - dt.timedelta(minutes=30), "81.2.69.142", ["radiologist"], device="d1"),
        login_event("radiology", now - dt.timedelta(minutes=10), "8.8.8.8", ["radiologist"], device="d2"),
        *[login_event(a, now - dt.timedelta(minutes=10), "81.2.69.142", ["pacs-admin"]) for a in admins],
        # a brute force an hour ago that nobody acknowledged
        *[login_event("victim", hour_ago - dt.timedelta(seconds=i), "81.2.69.142", ["radiologist"],
                      outcome="failure") for i in range(8)]])
    watcher = Watcher(cluster, settings, run_jobs=False)
    watcher.tick(hour_ago)  # the engine ran an hour ago, and not since
    watcher.close()
    assert [a.signal for a in list_alerts(cluster, settings)] == ["1a"]

    answers = checklist(cluster, settings, now)
    assert [a.key for a in answers] == KEYS
    assert statuses(answers) == dict.fromkeys(KEYS, "FAIL"), [a for a in answers if a.status != "FAIL"]
    by_key = {a.key: "\n".join(a.evidence) for a in answers}
    assert "radiology: a generic account name" in by_key["unique-logins"]
    assert "radiology: 2 countries within one hour" in by_key["unique-logins"]
    assert "2 of 4 account(s) hold an admin role" in by_key["least-privilege"]
    assert all(f"{a}: no second factor" in by_key["mfa"] for a in admins)
    assert "not running" in by_key["alerts-logins"] and "no channel" in by_key["alerts-export-sharing"]
    assert "plain HTTP" in by_key["encryption"]
    assert "never acknowledged (ACTIVE)" in by_key["response-owner"]

    # with a user directory, least privilege counts its enabled accounts (also those never seen in events)
    directory = settings.index("directory")
    for name, admin, enabled in (("d.one", True, True), ("d.two", False, True), ("d.three", False, True),
                                 ("d.gone", True, False)):
        cluster.request("PUT", f"/{directory}/_doc/{name}", body={
            "user": {"name": name}, "directory": {"admin": admin, "enabled": enabled, "source": "keycloak"}})
    least = next(a for a in checklist(cluster, settings, now) if a.key == "least-privilege")
    assert least.status == "FAIL" and "1 of 3 account(s) hold an admin role (33%" in least.evidence[0]
    assert least.looked_at[0] == f"enabled accounts in the user directory {directory}: 3"


def test_every_item_passes_on_a_careful_installation(pack_settings: Settings, keycloak: devkc.KeycloakState,
                                                     kc_admin: KeycloakRest, tls_front: tuple[TlsProxy, TlsProxy],
                                                     tmp_path: Path) -> None:
    node, kc = tls_front
    overrides: dict[str, Any] = {
        "cluster": {"url": node.url, "ca_bundle": str(node.ca)}, "id_prefix": pack_settings.id_prefix,
        "namespace": pack_settings.namespace, "pseudonymization": {"salt": "checklist-salt-0123456789"},
        "engine": {"mode": "pacsguard", "renotify_every": "0s"},
        "routing": {"default_owner": "PACS on-call (oncall@hospital.test)"},
        "notifications": {"channels": [{"name": "soc", "type": "webhook", "url": "https://127.0.0.1:9/hook"}],
                          "delivery": {"max_attempts": 1}},
        "connectors": {"keycloak": {"url": kc.url, "realm": keycloak.realm, "ca_bundle": str(kc.ca),
                                    "client_secret_file": str(keycloak.connector_secret_file)}}}
    settings = load_settings(environ={}, overrides=overrides)
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    admin = admin_with_otp(kc_admin, keycloak.realm)
    staff = [f"staff{i}.{uuid.uuid4().hex[:4]}" for i in range(5)]
    ship(cluster, settings, [
        *[login_event(u, now - dt.timedelta(minutes=30), "81.2.69.142", ["radiologist"]) for u in staff],
        login_event(admin, now - dt.timedelta(minutes=30), "81.2.69.142", ["pacs-admin"]),
        *[login_event("typo.user", now - dt.timedelta(minutes=3, seconds=i), "81.2.69.142", ["radiologist"],
                      outcome="failure") for i in range(8)]])
    watcher = Watcher(cluster, settings, run_jobs=False)
    watcher.tick(now)
    watcher.close()
    alerts = list_alerts(cluster, settings)
    assert [a.signal for a in alerts] == ["1a"]
    acknowledge(cluster, settings, alerts[0].id, by="ann", note="user mistyped; confirmed by phone")

    answers = checklist(cluster, settings, dt.datetime.now(dt.timezone.utc))
    assert statuses(answers) == dict.fromkeys(KEYS, "PASS"), [a for a in answers if a.status != "PASS"]
    by_key = {a.key: "\n".join(a.evidence) for a in answers}
    assert "1 of 7 account(s) hold an admin role" in by_key["least-privilege"]
    assert "every admin account (1) has a second factor" in by_key["mfa"]
    assert "TLS, certificate verified" in by_key["encryption"]
    assert "1 of 1 alert(s) acknowledged" in by_key["response-owner"]

    sfile = tmp_path / "settings.yaml"
    sfile.write_text(yaml.safe_dump(overrides))
    md = CliRunner().invoke(app, ["--settings", str(sfile), "checklist", "--markdown", "--out",
                                  str(tmp_path / "audit.md")])
    assert md.exit_code == 0, md.output
    assert "| 3 | MFA for admins and remote access | **PASS** |" in md.output
    assert (tmp_path / "audit.md").read_text().startswith("# pacsguard posture checklist")
    js = CliRunner().invoke(app, ["--settings", str(sfile), "--json", "checklist"])
    assert [i["status"] for i in json.loads(js.output)["items"]] == ["PASS"] * 8
