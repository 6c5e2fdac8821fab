"""Pure parts of the Keycloak connector and the local Keycloak: settings, secrets, options (no server)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pacsguard.core.errors import ConnectorError, PacsguardError
from pacsguard.core.settings import KeycloakConnectorSettings, load_settings
from pacsguard.devnode import keycloak as devkc
from pacsguard.idp.keycloak_rest import FormBody, JsonBody, KeycloakApiError, send, ssl_context
from pacsguard.response.connectors.keycloak import KeycloakConnector
from pydantic import SecretStr


def test_client_secret_from_the_environment_stays_a_string_and_never_prints() -> None:
    settings = load_settings(environ={"PACSGUARD_CONNECTORS__KEYCLOAK__CLIENT_SECRET": "0123",
                                      "PACSGUARD_CONNECTORS__KEYCLOAK__URL": "https://sso.example.org",
                                      "PACSGUARD_CONNECTORS__KEYCLOAK__REALM": "pacs"})
    kc = settings.connectors.keycloak
    assert kc.resolved_secret().get_secret_value() == "0123"  # not the number 123
    assert "0123" not in repr(settings) and "0123" not in str(kc)


def test_client_secret_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("s3cret\n")
    assert KeycloakConnectorSettings(client_secret_file=path).resolved_secret().get_secret_value() == "s3cret"


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read connectors.keycloak.client_secret_file {path}: No such file or directory"),
    ("\n", "connectors.keycloak.client_secret_file {path} is empty"),
])
def test_unusable_secret_file_is_a_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PacsguardError) as err:
        KeycloakConnectorSettings(client_secret_file=path).resolved_secret()
    assert str(err.value) == message.format(path=path)


def test_no_secret_at_all_says_where_to_put_one() -> None:
    with pytest.raises(PacsguardError, match="PACSGUARD_CONNECTORS__KEYCLOAK__CLIENT_SECRET or "
                                             "connectors.keycloak.client_secret_file"):
        KeycloakConnectorSettings().resolved_secret()


@pytest.mark.parametrize(("missing", "setting"), [("url", "connectors.keycloak.url"),
                                                   ("realm", "connectors.keycloak.realm")])
def test_connector_needs_url_and_realm(missing: str, setting: str) -> None:
    values = {"url": "https://sso.example.org", "realm": "pacs", "client_secret": SecretStr("x"), missing: None}
    with pytest.raises(PacsguardError, match=f"^{setting} is not set"):
        KeycloakConnector(KeycloakConnectorSettings(**values))


def test_request_bodies_hide_secrets_until_sent() -> None:
    form = FormBody({"grant_type": "password", "username": "alice", "password": SecretStr("pw&=1")})
    assert repr(form) == "<form grant_type, username, password>"
    assert form.encode() == b"grant_type=password&username=alice&password=pw%26%3D1"
    body = JsonBody({"credentials": [{"value": SecretStr("pw")}]})
    assert "pw" not in repr(body)
    assert body.encode() == b'{"credentials": [{"value": "pw"}]}'


def test_tls_is_verified_unless_turned_off(tmp_path: Path) -> None:
    assert ssl_context(None, True).verify_mode == ssl.CERT_REQUIRED
    assert ssl_context(None, False).verify_mode == ssl.CERT_NONE
    with pytest.raises(PacsguardError, match="CA bundle .* does not exist"):
        ssl_context(tmp_path / "missing.pem", True)


def test_nothing_listening_is_unreachable() -> None:
    port = devkc.free_port()
    with pytest.raises(KeycloakApiError) as err:
        send("GET", f"http://127.0.0.1:{port}/realms/pacs", timeout=5)
    assert err.value.kind == "unreachable"
    assert str(err.value) == f"Keycloak at http://127.0.0.1:{port} is not reachable: connection refused"


def test_connector_error_names_action_user_and_reason() -> None:
    err = ConnectorError("keycloak", "disable", "user 'alice'", "no such user", where=" in realm 'pacs'")
    assert str(err) == "keycloak: cannot disable user 'alice' in realm 'pacs': no such user"
    assert (err.action, err.target, err.reason) == ("disable", "user 'alice'", "no such user")


@pytest.mark.parametrize(("console", "file", "expected"), [
    ("text", "text", ["--log-console-output=default", "--log-file-output=default"]),
    ("text", "json", ["--log-console-output=default", "--log-file-output=json"]),
    ("ecs", "ecs", ["--log-console-output=json", "--log-file-output=json", "--log-console-json-format=ecs",
                    "--log-file-json-format=ecs"]),
])
def test_log_options(console: str, file: str, expected: list[str]) -> None:
    opts = devkc._log_options(console, file, Path("/run/kc/keycloak.log"))
    assert opts[:3] == ["--log=console,file", "--log-file=/run/kc/keycloak.log", "--log-console-color=false"]
    assert opts[3:] == expected


def test_unknown_log_format_is_refused_before_anything_starts() -> None:
    with pytest.raises(PacsguardError, match="Keycloak log format must be one of text, json, ecs, not 'xml'"):
        devkc.up(devkc.free_port(), console_format="xml")


def test_recipe_asks_for_the_event_options_the_pack_needs() -> None:
    recipe = devkc.load_recipe()
    assert recipe["event_listener_options"]["success-level"] == "info"
    assert recipe["event_listener_options"]["include-representation"] == "true"
    assert recipe["realm"]["connector_roles"] == ["view-users", "manage-users"]
