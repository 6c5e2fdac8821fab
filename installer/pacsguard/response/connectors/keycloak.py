"""Containment and reset in Keycloak through its admin REST API, with a service account.

Actions (each takes a user name, looked up exactly in the configured realm):
  disable-user             set enabled=false: the next token request is refused (user_disabled)
  logout-user              end every session of the user (POST users/<id>/logout)
  require-password-update  add the UPDATE_PASSWORD required action
  remove-realm-role        remove a realm role granted directly to the user
and lookup-user, which changes nothing.

The service account needs only the realm-management roles view-users and
manage-users (pack/local-keycloak.yaml says why). Authentication is the
client-credentials grant; the token is renewed before it expires and once more
if Keycloak answers 401. TLS is verified (a CA bundle names a private CA).

Every action returns an `ActionResult`; running it twice is safe (the second
run finds nothing to change and says so). In dry-run mode only GET requests are
made: the result says what would change. Anything that goes wrong raises one
`ConnectorError` naming the action, the user, the realm and the reason, before
any change is made where the reason is known up front (Keycloak unreachable,
credentials refused, no such user, role not granted).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pacsguard.core.errors import ConnectorError, PacsguardError
from pacsguard.core.escaping import path_segment
from pacsguard.core.settings import KeycloakConnectorSettings
from pacsguard.idp.keycloak_rest import ClientCredentials, KeycloakApiError, KeycloakRest

CONNECTOR = "keycloak"
KeycloakAction = Literal["lookup-user", "disable-user", "logout-user", "require-password-update",
                         "remove-realm-role"]
UPDATE_PASSWORD = "UPDATE_PASSWORD"
# Fields of GET users/<id> that PUT does not take back (computed by Keycloak).
_READ_ONLY_USER_FIELDS = ("userProfileMetadata", "access", "createdTimestamp", "totp", "disableableCredentialTypes")
_VERBS: dict[str, str] = {
    "lookup-user": "look up",
    "disable-user": "disable",
    "logout-user": "log out",
    "require-password-update": "require a password update for",
    "remove-realm-role": "remove a realm role from",
}


@dataclass(frozen=True)
class KeycloakUser:
    id: str
    username: str
    realm: str
    enabled: bool
    email: str | None
    required_actions: tuple[str, ...]


@dataclass(frozen=True)
class ActionResult:
    """What an action did (executed) or would do (dry run); `changed` is False when there was nothing to do."""

    action: KeycloakAction
    realm: str
    username: str
    user_id: str
    executed: bool
    changed: bool
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)
    connector: str = CONNECTOR

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data"] = dict(self.data)
        return out


class KeycloakConnector:
    def __init__(self, settings: KeycloakConnectorSettings, *, dry_run: bool = False) -> None:
        if not settings.url:
            raise PacsguardError("connectors.keycloak.url is not set (PACSGUARD_CONNECTORS__KEYCLOAK__URL)")
        if not settings.realm:
            raise PacsguardError("connectors.keycloak.realm is not set (PACSGUARD_CONNECTORS__KEYCLOAK__REALM)")
        self.settings = settings
        self.realm: str = settings.realm
        self.dry_run = dry_run
        self.rest = KeycloakRest(settings.url, settings.realm,
                                 ClientCredentials(settings.client_id, settings.resolved_secret()),
                                 ca_bundle=settings.ca_bundle, verify_tls=settings.verify_tls,
                                 timeout=settings.timeout_seconds)

    # ---------------------------------------------------------------- plumbing

    def _reason(self, exc: KeycloakApiError) -> str:
        client = self.settings.client_id
        if exc.kind == "auth":
            return (f"Keycloak refused the credentials of client {client!r} "
                    f"({exc.error or 'HTTP ' + str(exc.status)}): check the client id and secret")
        if exc.kind == "forbidden":
            return (f"the service account of client {client!r} may not do this (HTTP 403): it needs the "
                    "realm-management roles view-users and manage-users")
        if exc.status == 404:
            return f"Keycloak answered HTTP 404 ({exc.error or 'not found'})"
        return str(exc)

    @contextmanager
    def _failing(self, action: KeycloakAction, username: str) -> Iterator[None]:
        """Turn every Keycloak failure inside into one ConnectorError for this action and user."""
        try:
            yield
        except ConnectorError:
            raise
        except KeycloakApiError as exc:
            raise self._error(action, username, self._reason(exc)) from None

    def _error(self, action: KeycloakAction, username: str, reason: str) -> ConnectorError:
        return ConnectorError(CONNECTOR, _VERBS[action], f"user {username!r}", reason,
                              where=f" in realm {self.realm!r} at {self.rest.url}")

    def _admin(self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        if self.dry_run and method != "GET":
            raise AssertionError(f"dry run must not {method} {path}")  # a bug, never a user error
        return self.rest.admin(method, self.realm, path, body=body, params=params)

    def _find(self, action: KeycloakAction, username: str) -> dict[str, Any]:
        found = self._admin("GET", "/users", params={"username": username, "exact": "true"}) or []
        # Keycloak keeps user names in lower case and matches them so.
        exact = [u for u in found if str(u.get("username", "")).lower() == username.lower()]
        if not exact:
            raise self._error(action, username, "no such user")
        user: dict[str, Any] = exact[0]
        return user

    def _result(self, action: KeycloakAction, user: Mapping[str, Any], changed: bool, done: str, would: str,
                unchanged: str, **data: Any) -> ActionResult:
        if not changed:
            detail = unchanged
        else:
            detail = would if self.dry_run else done
        return ActionResult(action=action, realm=self.realm, username=str(user["username"]), user_id=str(user["id"]),
                            executed=not self.dry_run and changed, changed=changed, detail=detail, data=data)

    def _put_user(self, user: Mapping[str, Any], **changes: Any) -> None:
        """PUT the whole representation back with the changes: a partial one may reset what it omits."""
        rep = {k: v for k, v in user.items() if k not in _READ_ONLY_USER_FIELDS}
        rep.update(changes)
        self._admin("PUT", f"/users/{path_segment(user['id'])}", body=rep)

    # ----------------------------------------------------------------- actions

    def lookup_user(self, username: str) -> KeycloakUser:
        with self._failing("lookup-user", username):
            user = self._find("lookup-user", username)
        return KeycloakUser(id=str(user["id"]), username=str(user["username"]), realm=self.realm,
                            enabled=bool(user.get("enabled", False)), email=user.get("email"),
                            required_actions=tuple(user.get("requiredActions") or ()))

    def credential_types(self, username: str) -> list[str]:
        """The user's credential types (password, otp, webauthn...): whether a second factor is set up.
        Reads only (view-users); for the posture checklist's MFA question."""
        with self._failing("lookup-user", username):
            user = self._find("lookup-user", username)
            creds = self._admin("GET", f"/users/{path_segment(user['id'])}/credentials") or []
        return sorted({str(c.get("type")) for c in creds})

    def disable_user(self, username: str) -> ActionResult:
        action: KeycloakAction = "disable-user"
        with self._failing(action, username):
            user = self._find(action, username)
            enabled = bool(user.get("enabled", False))
            if enabled and not self.dry_run:
                self._put_user(user, enabled=False)
            name = user["username"]
            return self._result(action, user, enabled, f"disabled {name}", f"would disable {name} (enabled now)",
                                f"{name} is already disabled")

    def logout_user(self, username: str) -> ActionResult:
        action: KeycloakAction = "logout-user"
        with self._failing(action, username):
            user = self._find(action, username)
            before = len(self._admin("GET", f"/users/{path_segment(user['id'])}/sessions") or [])
            after = before
            if before and not self.dry_run:
                self._admin("POST", f"/users/{path_segment(user['id'])}/logout")
                after = len(self._admin("GET", f"/users/{path_segment(user['id'])}/sessions") or [])
                if after:
                    raise self._error(action, username, f"{after} of {before} session(s) still open after logout")
            name = user["username"]
            return self._result(action, user, before > 0, f"ended {before} session(s) of {name}",
                                f"would end {before} session(s) of {name}", f"{name} has no open session",
                                sessions_before=before, sessions_after=after)

    def require_password_update(self, username: str) -> ActionResult:
        action: KeycloakAction = "require-password-update"
        with self._failing(action, username):
            user = self._find(action, username)
            required = list(user.get("requiredActions") or [])
            missing = UPDATE_PASSWORD not in required
            if missing and not self.dry_run:
                self._put_user(user, requiredActions=[*required, UPDATE_PASSWORD])
            name = user["username"]
            return self._result(action, user, missing, f"{name} must change the password at the next login",
                                f"would make {name} change the password at the next login",
                                f"{name} must already change the password at the next login")

    def remove_realm_role(self, username: str, role: str) -> ActionResult:
        action: KeycloakAction = "remove-realm-role"
        with self._failing(action, username):
            user = self._find(action, username)
            path = f"/users/{path_segment(user['id'])}/role-mappings/realm"
            direct = {r["name"]: r for r in self._admin("GET", path) or []}
            name = user["username"]
            if role not in direct:
                effective = {r["name"] for r in self._admin("GET", f"{path}/composite") or []}
                if role in effective:
                    # Removing it here would not take it away: say where it comes from instead of pretending.
                    raise self._error(action, username, f"role {role!r} comes from a group or a composite role, "
                                                        "not a direct grant: remove it there")
                return self._result(action, user, False, "", "", f"{name} does not have realm role {role!r}",
                                    role=role)
            if not self.dry_run:
                self._admin("DELETE", path, body=[direct[role]])
            return self._result(action, user, True, f"removed realm role {role!r} from {name}",
                                f"would remove realm role {role!r} from {name}", "", role=role)
