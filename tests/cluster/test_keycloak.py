"""The local Keycloak (devnode/keycloak.py) and the containment connector, against a real Keycloak.

Logins are real password logins through the token endpoint; admin changes are
real admin REST calls; what Keycloak logged is read back from its console (text)
and its event file (JSON records). The connector acts with the realm's
service-account client, as it would in a hospital.
"""

from __future__ import annotations

import json
import os
import pwd
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from keycloak_helpers import LogWatch, RealmUser, event_text, login
from pacsguard.core.errors import ConnectorError
from pacsguard.core.settings import KeycloakConnectorSettings
from pacsguard.devnode import keycloak as devkc
from pacsguard.devnode import local
from pacsguard.idp.keycloak_rest import KeycloakRest, PasswordGrant, request_token
from pacsguard.response.connectors.keycloak import ActionResult, KeycloakConnector
from pydantic import SecretStr
from tlsproxy import TlsProxy, start_proxy

pytestmark = pytest.mark.keycloak


def connector(state: devkc.KeycloakState, dry_run: bool = False, **changes: Any) -> KeycloakConnector:
    settings: dict[str, Any] = {"url": state.url, "realm": state.realm,
                                "client_secret_file": state.connector_secret_file, **changes}
    return KeycloakConnector(KeycloakConnectorSettings(**settings), dry_run=dry_run)


def watches(state: devkc.KeycloakState) -> tuple[LogWatch, LogWatch]:
    """(console: text lines, event file: JSON records), from now on."""
    return LogWatch(state.console_log), LogWatch(state.event_log)


def user_rep(admin: KeycloakRest, state: devkc.KeycloakState, user: RealmUser) -> dict[str, Any]:
    rep: dict[str, Any] = admin.admin("GET", state.realm, f"/users/{user.id}")
    return rep


def sessions(admin: KeycloakRest, state: devkc.KeycloakState, user: RealmUser) -> int:
    return len(admin.admin("GET", state.realm, f"/users/{user.id}/sessions") or [])


def realm_roles(admin: KeycloakRest, state: devkc.KeycloakState, user: RealmUser) -> set[str]:
    return {r["name"] for r in admin.admin("GET", state.realm, f"/users/{user.id}/role-mappings/realm") or []}


# ------------------------------------------------------------------ the server


def test_keycloak_runs_on_loopback_as_an_unprivileged_user(keycloak: devkc.KeycloakState) -> None:
    assert keycloak.url.startswith("http://127.0.0.1:")
    again = devkc.up(keycloak.port, console_format=keycloak.console_format, file_format=keycloak.file_format)
    assert again.pid == keycloak.pid  # reused, not restarted
    info = devkc.describe(keycloak.port)
    assert info["running"] and info["ready"] and info["rss_bytes"] > 0
    if os.geteuid() == 0:  # Keycloak runs as the node's unprivileged user, never as root
        assert Path(f"/proc/{keycloak.pid}").stat().st_uid == pwd.getpwnam(local.NODE_USER).pw_uid
    for name in ("admin_password_file", "connector_secret_file", "users_file"):
        assert Path(getattr(keycloak, name)).stat().st_mode & 0o077 == 0, f"{name} is readable by others"


# ------------------------------------------------------------- events logged


def test_real_logins_are_logged_as_events_in_text_and_json(keycloak: devkc.KeycloakState, new_user: Any) -> None:
    user = new_user()
    ghost = f"ghost{uuid.uuid4().hex[:8]}"
    console, events = watches(keycloak)
    for _ in range(3):
        assert login(keycloak, user.username, "wrong-password").error == "invalid_grant"
    assert login(keycloak, user.username, user.password).ok
    assert not login(keycloak, ghost, "whatever").ok

    mine = f'username="{user.username}"'
    for watch in (console, events):
        failed = watch.wait_for(lambda t: t.startswith('type="LOGIN_ERROR"') and mine in t, count=3)
        assert len(failed) == 3, watch.path
        assert all('error="invalid_user_credentials"' in event_text(line) for line in failed)  # type: ignore[operator]
        assert all(f'userId="{user.id}"' in event_text(line) for line in failed)  # type: ignore[operator]
        ok = watch.wait_for(lambda t: t.startswith('type="LOGIN"') and mine in t)
        assert len(ok) == 1, f"no successful LOGIN event in {watch.path} (success-level must be info)"
        assert f'realmName="{keycloak.realm}"' in event_text(ok[0])  # type: ignore[operator]
        unknown = watch.wait_for(lambda t: 'type="LOGIN_ERROR"' in t and f'username="{ghost}"' in t)
        assert len(unknown) == 1 and 'error="user_not_found"' in (event_text(unknown[0]) or "")
    text_ok = console.wait_for(lambda t: t.startswith('type="LOGIN"') and mine in t)[0]
    assert " INFO  [org.keycloak.events] " in text_ok  # not DEBUG: it prints without a debug log level
    record = json.loads(events.wait_for(lambda t: t.startswith('type="LOGIN"') and mine in t)[0])
    assert record["loggerName"] == "org.keycloak.events" and record["level"] == "INFO"


def test_admin_role_grant_is_an_admin_event_with_its_representation(
        keycloak: devkc.KeycloakState, kc_admin: KeycloakRest, new_user: Any) -> None:
    user = new_user()
    console, events = watches(keycloak)
    assert devkc.grant_realm_roles(kc_admin, keycloak.realm, user.id, ["pacs-admin"]) == ["pacs-admin"]
    path = f'resourcePath="users/{user.id}/role-mappings/realm"'
    for watch in (console, events):
        grants = watch.wait_for(lambda t: 'operationType="CREATE"' in t and path in t)
        assert len(grants) == 1, watch.path
        text = event_text(grants[0]) or ""
        assert 'resourceType="REALM_ROLE_MAPPING"' in text
        assert 'representation="[{' in text and '\\"name\\":\\"pacs-admin\\"' in text


# ------------------------------------------------------------------ connector


def test_disable_refuses_the_next_login(keycloak: devkc.KeycloakState, kc_admin: KeycloakRest,
                                        new_user: Any) -> None:
    user = new_user()
    assert login(keycloak, user.username, user.password).ok
    console, _ = watches(keycloak)
    result = connector(keycloak).disable_user(user.username)
    assert result == ActionResult(action="disable-user", realm=keycloak.realm, username=user.username,
                                  user_id=user.id, executed=True, changed=True,
                                  detail=f"disabled {user.username}")
    refused = login(keycloak, user.username, user.password)
    assert refused.status == 400 and refused.error == "invalid_grant"
    logged = console.wait_for(lambda t: 'type="LOGIN_ERROR"' in t and f'username="{user.username}"' in t)
    assert len(logged) == 1 and 'error="user_disabled"' in (event_text(logged[0]) or "")
    rep = user_rep(kc_admin, keycloak, user)
    assert rep["enabled"] is False
    assert (rep["email"], rep["firstName"]) == (f"{user.username}@pacs.example.org", "Test")  # nothing else lost
    again = connector(keycloak).disable_user(user.username)
    assert (again.executed, again.changed, again.detail) == (False, False, f"{user.username} is already disabled")


def test_logout_ends_every_session(keycloak: devkc.KeycloakState, kc_admin: KeycloakRest, new_user: Any) -> None:
    user = new_user()
    first = login(keycloak, user.username, user.password)
    assert first.ok and login(keycloak, user.username, user.password).ok
    assert sessions(kc_admin, keycloak, user) == 2
    result = connector(keycloak).logout_user(user.username)
    assert (result.executed, result.changed) == (True, True)
    assert dict(result.data) == {"sessions_before": 2, "sessions_after": 0}
    assert sessions(kc_admin, keycloak, user) == 0
    # The refresh token of a session that ended no longer works.
    reply = request_token(keycloak.url, keycloak.realm, {"grant_type": "refresh_token",
                                                         "client_id": keycloak.login_client,
                                                         "refresh_token": str(first.body["refresh_token"])})
    assert reply.status == 400 and reply.error == "invalid_grant"
    assert connector(keycloak).logout_user(user.username).detail == f"{user.username} has no open session"


def test_reset_actions_remove_the_role_and_require_a_new_password(
        keycloak: devkc.KeycloakState, kc_admin: KeycloakRest, new_user: Any) -> None:
    user = new_user(roles=["pacs-admin", "pacs-user"])
    kc = connector(keycloak)
    removed = kc.remove_realm_role(user.username, "pacs-admin")
    assert (removed.executed, removed.changed, dict(removed.data)) == (True, True, {"role": "pacs-admin"})
    assert "pacs-admin" not in realm_roles(kc_admin, keycloak, user)
    assert "pacs-user" in realm_roles(kc_admin, keycloak, user)
    assert kc.remove_realm_role(user.username, "pacs-admin").changed is False

    assert kc.require_password_update(user.username).changed is True
    assert user_rep(kc_admin, keycloak, user)["requiredActions"] == ["UPDATE_PASSWORD"]
    refused = login(keycloak, user.username, user.password)
    assert refused.error == "invalid_grant" and "not fully set up" in str(refused.body.get("error_description"))
    assert kc.require_password_update(user.username).changed is False
    found = kc.lookup_user(user.username.upper())  # Keycloak user names are case-insensitive
    assert (found.id, found.enabled, found.required_actions) == (user.id, True, ("UPDATE_PASSWORD",))


def test_dry_run_says_what_it_would_do_and_changes_nothing(
        keycloak: devkc.KeycloakState, kc_admin: KeycloakRest, new_user: Any) -> None:
    user = new_user(roles=["pacs-admin"])
    assert login(keycloak, user.username, user.password).ok
    kc = connector(keycloak, dry_run=True)
    results = [kc.disable_user(user.username), kc.logout_user(user.username),
               kc.require_password_update(user.username), kc.remove_realm_role(user.username, "pacs-admin")]
    assert [(r.executed, r.changed) for r in results] == [(False, True)] * 4
    assert [r.detail.split()[0] for r in results] == ["would"] * 4
    rep = user_rep(kc_admin, keycloak, user)
    assert (rep["enabled"], rep["requiredActions"]) == (True, [])
    assert sessions(kc_admin, keycloak, user) == 1
    assert "pacs-admin" in realm_roles(kc_admin, keycloak, user)


@pytest.mark.parametrize("case", ["wrong-secret", "keycloak-down", "unknown-user", "unknown-realm"])
def test_failures_are_one_clear_error_and_change_nothing(
        case: str, keycloak: devkc.KeycloakState, kc_admin: KeycloakRest, new_user: Any) -> None:
    user = new_user(roles=["pacs-admin"])
    assert login(keycloak, user.username, user.password).ok
    wrong = SecretStr("not-the-secret-" + uuid.uuid4().hex)
    target, changes, reason = {
        "wrong-secret": (user.username, {"client_secret_file": None, "client_secret": wrong},
                         "Keycloak refused the credentials of client 'pacsguard-containment'"),
        "keycloak-down": (user.username, {"url": f"http://127.0.0.1:{devkc.free_port()}"},
                          "is not reachable: connection refused"),
        "unknown-user": (f"nobody{uuid.uuid4().hex[:6]}", {}, "no such user"),
        "unknown-realm": (user.username, {"realm": "no-such-realm"}, "HTTP 404 (Realm does not exist)"),
    }[case]
    kc = connector(keycloak, **changes)
    actions = [("disable", lambda: kc.disable_user(target)), ("log out", lambda: kc.logout_user(target)),
               ("require a password update for", lambda: kc.require_password_update(target)),
               ("remove a realm role from", lambda: kc.remove_realm_role(target, "pacs-admin"))]
    for verb, act in actions:
        with pytest.raises(ConnectorError) as err:
            act()
        message = str(err.value)
        assert message.startswith(f"keycloak: cannot {verb} user {target!r} in realm "), message
        assert reason in message, message
        assert wrong.get_secret_value() not in message and keycloak.connector_secret().get_secret_value() not in message
        assert (err.value.connector, err.value.action, err.value.target) == ("keycloak", verb, f"user {target!r}")
    rep = user_rep(kc_admin, keycloak, user)
    assert (rep["enabled"], rep["requiredActions"]) == (True, [])
    assert sessions(kc_admin, keycloak, user) == 1
    assert "pacs-admin" in realm_roles(kc_admin, keycloak, user)


def test_token_is_refreshed_before_it_expires_then_granted_anew(keycloak: devkc.KeycloakState) -> None:
    """The REST client's token life cycle, seen in Keycloak's own events (REFRESH_TOKEN, then LOGIN)."""
    now = [0.0]
    api = KeycloakRest(keycloak.url, "master", PasswordGrant("admin-cli", keycloak.admin_user,
                                                             keycloak.admin_password()), clock=lambda: now[0])
    console, _ = watches(keycloak)
    first = api.token()
    assert api.token() == first  # cached while valid
    now[0] += 55  # past the access token (60 s in master, renewed 10 s early), within the refresh token (30 min)
    second = api.token()
    assert second != first
    refreshed = console.wait_for(lambda t: t.startswith('type="REFRESH_TOKEN"') and 'clientId="admin-cli"' in t)
    assert len(refreshed) == 1
    now[0] += 7200  # past both: a new password grant
    assert api.token() not in (first, second)
    logins = console.wait_for(lambda t: t.startswith('type="LOGIN"') and 'clientId="admin-cli"' in t, count=2)
    assert len(logins) == 2


@pytest.fixture(scope="module")
def keycloak_tls(keycloak: devkc.KeycloakState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsProxy]:
    """An HTTPS front (a throwaway CA) to the local Keycloak: a real handshake for the connector."""
    proxy = start_proxy(keycloak.url, tmp_path_factory.mktemp("keycloak-tls"), None, None)
    yield proxy
    proxy.close()


def test_connector_verifies_tls_and_trusts_the_given_ca(keycloak: devkc.KeycloakState, keycloak_tls: TlsProxy,
                                                        new_user: Any) -> None:
    user = new_user()
    with pytest.raises(ConnectorError) as err:
        connector(keycloak, url=keycloak_tls.url).disable_user(user.username)
    assert str(err.value) == (f"keycloak: cannot disable user {user.username!r} in realm {keycloak.realm!r} at "
                              f"{keycloak_tls.url}: Keycloak at {keycloak_tls.url}: certificate verify failed "
                              "(give the CA with a CA bundle)")
    found = connector(keycloak, url=keycloak_tls.url, ca_bundle=keycloak_tls.ca).lookup_user(user.username)
    assert (found.id, found.enabled) == (user.id, True)


def test_cli_up_reuses_status_reports_and_no_secret_is_printed(keycloak: devkc.KeycloakState) -> None:
    from pacsguard.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    port = str(keycloak.port)
    up = runner.invoke(app, ["cluster", "keycloak", "up", "--port", port, "--log-format", keycloak.console_format,
                             "--event-log-format", keycloak.file_format])
    assert up.exit_code == 0, up.output
    assert f"Keycloak {keycloak.version} is up at {keycloak.url} (pid {keycloak.pid})" in up.output
    assert f"pacsguard collect --keycloak-file {keycloak.event_log}" in up.output
    secrets = [keycloak.admin_password(), keycloak.connector_secret(), keycloak.user_password("alice")]
    status = runner.invoke(app, ["--json", "cluster", "keycloak", "status", "--port", port])
    assert status.exit_code == 0, status.output
    info = json.loads(status.output)
    assert (info["running"], info["ready"], info["pid"], info["realm"]) == (True, True, keycloak.pid, "pacs")
    for output in (up.output, status.output):
        assert not any(secret.get_secret_value() in output for secret in secrets)
    idle = str(devkc.free_port())
    missing = runner.invoke(app, ["cluster", "keycloak", "status", "--port", idle])
    assert missing.exit_code == 1 and f"no pacsguard Keycloak running on port {idle}" in missing.output
    assert runner.invoke(app, ["cluster", "keycloak", "down", "--port", idle]).output.strip() == (
        f"no pacsguard Keycloak running on port {idle}")
