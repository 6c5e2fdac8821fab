"""A local Keycloak from Maven Central for development and CI, started like the local OpenSearch node.

The distribution (`org.keycloak:keycloak-quarkus-dist`, pack/local-keycloak.yaml) is
downloaded once into the node's download cache and unpacked once. Each instance
(one per port) gets a thin home of its own under <cache>/keycloak/run/<port>/home:
its own copy of the launcher, conf/ and lib/quarkus/ (start-dev rewrites them when
it re-augments) and data/ (the dev-file H2 database), with the big lib/lib/ of
jars linked to the shared unpacked copy. As root it runs as the node's
unprivileged user. It listens on 127.0.0.1 only.

Events are logged the way the pack reads them: the jboss-logging listener with
success-level=info (successful logins and admin events print at INFO, not DEBUG)
and include-representation=true (role names on grants), to the console
(<run>/logs/console.log, text unless asked otherwise) and to a file the collector
tails (<run>/logs/keycloak.log). A realm (default `pacs`) is created idempotently
through the admin REST API with user and admin events on, a few users with random
passwords, a public client for password-grant logins and a confidential client
whose service account the containment connector uses. Every secret (bootstrap
admin password, connector client secret, user passwords) lives in
<run>/secrets/ with mode 0600, owned by the caller, never printed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import SecretStr

from pacsguard.core.content import content_path
from pacsguard.core.errors import PacsguardError
from pacsguard.core.escaping import path_segment
from pacsguard.devnode import local
from pacsguard.devnode.local import Progress
from pacsguard.idp.keycloak_rest import KeycloakApiError, KeycloakRest, PasswordGrant

LogFormat = Literal["text", "json", "ecs"]
LOG_FORMATS: tuple[str, ...] = ("text", "json", "ecs")
STATE_FILE = "keycloak.json"
READY_PATH = "/realms/master/.well-known/openid-configuration"
# A dev Keycloak on a busy CI machine can take this long to answer its first admin calls.
ADMIN_TIMEOUT_SECONDS = 60.0


def _quiet(_: str) -> None:
    return None


def load_recipe() -> dict[str, Any]:
    with content_path("pack", "local-keycloak.yaml").open() as fh:
        recipe: dict[str, Any] = yaml.safe_load(fh)
    return recipe


def keycloak_root() -> Path:
    return local.cache_root() / "keycloak"


def run_dir_for(port: int) -> Path:
    return keycloak_root() / "run" / str(port)


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------------ distribution


def install_dist(recipe: dict[str, Any], progress: Progress = _quiet) -> Path:
    """Download (once, Maven Central) and unpack (once) the distribution; return its home."""
    version = recipe["keycloak_version"]
    home = keycloak_root() / f"keycloak-{version}"
    marker = home / ".pacsguard-unpacked"
    if marker.exists():
        return home
    archive = local.fetch(recipe["distribution"], version, recipe["maven_repository"], progress)
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=home.parent))
    progress(f"unpacking {archive.name}")
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, filter="data")
            else:  # pragma: no cover - Python without the extraction filters (< 3.10.12)
                tar.extractall(staging)
        roots = list(staging.iterdir())
        if len(roots) != 1 or not (roots[0] / "bin" / "kc.sh").exists():
            raise PacsguardError(f"{archive} is not a Keycloak distribution (no <root>/bin/kc.sh)")
        _readable_by_all(roots[0])
        (roots[0] / ".pacsguard-unpacked").write_text(version + "\n")
        if home.exists():
            shutil.rmtree(home)
        roots[0].rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


def _readable_by_all(root: Path) -> None:
    """The shared copy is read by every instance's user: folders the archive does not list are made
    with the umask (0700 under umask 077), so open them up, and every file for reading."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, os.stat(dirpath).st_mode | 0o555)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, os.stat(path).st_mode | 0o444)


def _traversable(*dirs: Path) -> None:
    """As root, Keycloak runs as the node user: it must be able to enter the cache folders on the
    way to its home and to the shared jars, whatever the umask was when they were made."""
    for folder in dirs:
        mode = folder.stat().st_mode
        if mode & 0o005 != 0o005:
            folder.chmod(mode | 0o055)


def _prepare_home(dist: Path, home: Path) -> None:
    """The instance's home: small writable copies, and the shared jars linked (read-only use)."""
    version = (dist / "version.txt").read_text()
    if (home / "version.txt").exists() and (home / "version.txt").read_text() == version:
        return
    if home.exists():
        shutil.rmtree(home)  # another version: its augmentation and database are not reusable
    home.mkdir(parents=True)
    (home / "bin").mkdir()
    shutil.copy2(dist / "bin" / "kc.sh", home / "bin" / "kc.sh")  # kc.sh finds its home from its own path
    shutil.copytree(dist / "conf", home / "conf")
    (home / "lib").mkdir()
    shutil.copy2(dist / "lib" / "quarkus-run.jar", home / "lib" / "quarkus-run.jar")
    shutil.copytree(dist / "lib" / "app", home / "lib" / "app")
    shutil.copytree(dist / "lib" / "quarkus", home / "lib" / "quarkus")
    (home / "lib" / "lib").symlink_to(dist / "lib" / "lib", target_is_directory=True)
    for name in ("providers", "themes", "data"):
        (home / name).mkdir()
    shutil.copy2(dist / "version.txt", home / "version.txt")


# ------------------------------------------------------------------- state


@dataclass
class KeycloakState:
    pid: int
    port: int
    url: str
    version: str
    home: str
    run_dir: str
    console_log: str  # the process's console (start-up errors land here)
    event_log: str  # the file handler's log: what the collector tails (--keycloak-file)
    console_format: str
    file_format: str
    realm: str
    admin_user: str
    login_client: str
    connector_client: str
    admin_password_file: str
    connector_secret_file: str
    users_file: str

    @classmethod
    def load(cls, path: Path) -> KeycloakState | None:
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def admin_password(self) -> SecretStr:
        return SecretStr(Path(self.admin_password_file).read_text().strip())

    def connector_secret(self) -> SecretStr:
        return SecretStr(Path(self.connector_secret_file).read_text().strip())

    def user_password(self, username: str) -> SecretStr:
        users = json.loads(Path(self.users_file).read_text())
        if username not in users:
            raise PacsguardError(f"no password kept for user {username!r} of the local Keycloak")
        return SecretStr(users[username])

    def admin_api(self) -> KeycloakRest:
        """The bootstrap admin (realm master, client admin-cli), for set-up and tests."""
        return KeycloakRest(self.url, "master", PasswordGrant("admin-cli", self.admin_user, self.admin_password()),
                            timeout=ADMIN_TIMEOUT_SECONDS)

    def public(self) -> dict[str, Any]:
        """What may be shown: paths of the secret files, never their content."""
        return asdict(self)


def _state_file(port: int) -> Path:
    return run_dir_for(port) / STATE_FILE


def status(port: int) -> KeycloakState | None:
    state = KeycloakState.load(_state_file(port))
    # our Keycloak: the launcher (kc.sh) or the JVM it exec'd, both naming this instance's home
    if state and local.pid_runs(state.pid, state.home):
        return state
    return None


def rss_bytes(state: KeycloakState) -> int:
    """Resident memory of the instance: every process of its session (launcher + JVM)."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) != state.pid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + READY_PATH, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


# ----------------------------------------------------------------- run/stop


def _log_options(console_format: str, file_format: str, event_log: Path) -> list[str]:
    def output(fmt: str) -> str:
        return "default" if fmt == "text" else "json"

    opts = ["--log=console,file", f"--log-file={event_log}", "--log-console-color=false",
            f"--log-console-output={output(console_format)}", f"--log-file-output={output(file_format)}"]
    if console_format == "ecs":
        opts.append("--log-console-json-format=ecs")
    if file_format == "ecs":
        opts.append("--log-file-json-format=ecs")
    return opts


def up(port: int | None = None, progress: Progress = _quiet, fresh: bool = False,
       console_format: str = "text", file_format: str | None = None, timeout: float = 300.0) -> KeycloakState:
    """Start Keycloak on 127.0.0.1:<port> (a free one if None) and set up its realm.

    A running instance of ours on that port with the same log formats is reused.
    `fresh` starts from an empty database (new passwords and secrets, new logs).
    """
    file_format = file_format or console_format
    for fmt in (console_format, file_format):
        if fmt not in LOG_FORMATS:
            raise PacsguardError(f"Keycloak log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    recipe = load_recipe()
    port = port or free_port()
    running = status(port)
    if running and not fresh and (running.console_format, running.file_format) == (console_format, file_format):
        ensure_realm(running.admin_api(), recipe, Path(running.run_dir) / "secrets", progress)
        return running
    if running:
        progress(f"restarting Keycloak on port {port}" + (" with empty data" if fresh else " with new log formats"))
        down(port)
    if local.port_open(port):
        raise PacsguardError(f"port {port} on 127.0.0.1 is taken by another process; choose --port")
    version = recipe["keycloak_version"]
    dist = install_dist(recipe, progress)
    java_home = local.ensure_java(local.load_recipe(), progress, needed_by=f"Keycloak {version}")

    run = run_dir_for(port)
    home, logs, secret_dir = run / "home", run / "logs", run / "secrets"
    admin_pw_file = secret_dir / "admin-password"
    if fresh or not admin_pw_file.exists():
        # The bootstrap admin is created only into an empty database: a new password needs one.
        for stale in (home / "data", logs, secret_dir):
            shutil.rmtree(stale, ignore_errors=True)
    run.mkdir(parents=True, exist_ok=True)
    _prepare_home(dist, home)
    (home / "data").mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    secret_dir.mkdir(mode=0o700, exist_ok=True)
    if not admin_pw_file.exists():
        _write_secret(admin_pw_file, secrets.token_urlsafe(24))
    admin_password = admin_pw_file.read_text().strip()

    console_log, event_log = logs / "console.log", logs / "keycloak.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAVA_OPTS", "JAVA_TOOL_OPTIONS", "JAVA_OPTS_APPEND") and not k.startswith("KC_")}
    env.update(JAVA_HOME=str(java_home), JAVA_OPTS_KC_HEAP=recipe["heap"],
               KC_BOOTSTRAP_ADMIN_USERNAME=recipe["admin_user"], KC_BOOTSTRAP_ADMIN_PASSWORD=admin_password)
    listener = "--spi-events-listener--jboss-logging--"
    args = [str(home / "bin" / "kc.sh"), "start-dev", "--http-host=127.0.0.1", f"--http-port={port}",
            *_log_options(console_format, file_format, event_log),
            *[f"{listener}{key}={value}" for key, value in recipe["event_listener_options"].items()]]
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:
        _traversable(local.cache_root(), keycloak_root(), dist, run.parent, run)
        uid, gid = local.node_user()
        local.chown_tree(home, uid, gid)
        local.chown_tree(logs, uid, gid)
        kwargs.update(user=uid, group=gid, extra_groups=[])
        env["HOME"] = str(home)
    progress(f"starting Keycloak {version} on 127.0.0.1:{port} (log: {console_log})")
    started = time.monotonic()
    with console_log.open("ab") as out:
        proc = subprocess.Popen(["/bin/sh", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(home), **kwargs)
    realm = recipe["realm"]
    state = KeycloakState(
        pid=proc.pid, port=port, url=f"http://127.0.0.1:{port}", version=version, home=str(home),
        run_dir=str(run), console_log=str(console_log), event_log=str(event_log),
        console_format=console_format, file_format=file_format, realm=realm["name"],
        admin_user=recipe["admin_user"], login_client=realm["login_client"],
        connector_client=realm["connector_client"], admin_password_file=str(admin_pw_file),
        connector_secret_file=str(secret_dir / "connector-secret"), users_file=str(secret_dir / "users.json"))
    _state_file(port).write_text(json.dumps(state.public(), indent=2))
    next_note = started + 10
    deadline = started + timeout
    while True:
        if proc.poll() is not None:
            raise PacsguardError(f"Keycloak exited with code {proc.returncode} while starting; see {console_log}:\n"
                                 f"{local.tail(console_log, 20)}")
        if _ready(state.url):
            break
        now = time.monotonic()
        if now > deadline:
            down(port)
            raise PacsguardError(f"Keycloak did not answer on {state.url} within {timeout:.0f}s; see {console_log}:\n"
                                 f"{local.tail(console_log, 20)}")
        if now >= next_note:
            progress(f"waiting for Keycloak to be ready ({now - started:.0f}s)")
            next_note = now + 10
        time.sleep(0.5)
    progress(f"Keycloak ready after {time.monotonic() - started:.1f}s; setting up realm {realm['name']!r}")
    ensure_realm(state.admin_api(), recipe, secret_dir, progress)
    return state


def down(port: int, timeout: float = 60.0) -> bool:
    """Stop only the Keycloak this project started on <port> (its pid, then its session). True if stopped."""
    state = KeycloakState.load(_state_file(port))
    if not state:
        return False
    # kc.sh forwards TERM to the JVM and waits for it; past the timeout, the session we created
    # for it goes (launcher and JVM)
    stopped = local.stop_pid(state.pid, state.home, signal.SIGTERM, timeout, group=True)
    deadline = time.monotonic() + 20
    while local.port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    _state_file(port).unlink(missing_ok=True)
    return stopped


# ---------------------------------------------------------- realm set-up


def _exists(api: KeycloakRest, realm: str, path: str) -> Any | None:
    try:
        return api.admin("GET", realm, path)
    except KeycloakApiError as exc:
        if exc.status == 404:
            return None
        raise


def find_user(api: KeycloakRest, realm: str, username: str) -> dict[str, Any] | None:
    users = api.admin("GET", realm, "/users", params={"username": username, "exact": "true"})
    for user in users or []:
        if user.get("username") == username.lower():  # Keycloak stores user names in lower case
            found: dict[str, Any] = user
            return found
    return None


def client_uuid(api: KeycloakRest, realm: str, client_id: str) -> str | None:
    for client in api.admin("GET", realm, "/clients", params={"clientId": client_id}) or []:
        if client.get("clientId") == client_id:
            return str(client["id"])
    return None


def create_user(api: KeycloakRest, realm: str, username: str, password: SecretStr,
                roles: Iterable[str] = (), first_name: str = "Test", last_name: str = "User",
                email: str | None = None) -> str:
    """Create an enabled user with a password and realm roles; return its id.

    First/last name and e-mail are set because Keycloak's default user profile
    requires them: without, a password login answers "Account is not fully set up".
    """
    api.admin("POST", realm, "/users", body={
        "username": username, "enabled": True, "firstName": first_name, "lastName": last_name,
        "email": email or f"{username}@pacs.example.org", "emailVerified": True,
        "credentials": [{"type": "password", "value": password, "temporary": False}]})
    user = find_user(api, realm, username)
    if user is None:
        raise PacsguardError(f"Keycloak created user {username!r} in realm {realm!r} but cannot find it")
    user_id = str(user["id"])
    grant_realm_roles(api, realm, user_id, roles)
    return user_id


def grant_realm_roles(api: KeycloakRest, realm: str, user_id: str, roles: Iterable[str]) -> list[str]:
    """Grant the realm roles the user lacks; return those granted (each grant is an admin event)."""
    have = {r["name"] for r in api.admin("GET", realm, f"/users/{path_segment(user_id)}/role-mappings/realm") or []}
    reps = [api.admin("GET", realm, f"/roles/{path_segment(name)}") for name in roles if name not in have]
    if reps:
        api.admin("POST", realm, f"/users/{path_segment(user_id)}/role-mappings/realm", body=reps)
    return [r["name"] for r in reps]


def _ensure_events(api: KeycloakRest, realm: str) -> None:
    want = {"eventsEnabled": True, "adminEventsEnabled": True, "adminEventsDetailsEnabled": True}
    config = api.admin("GET", realm, "/events/config") or {}
    listeners = list(config.get("eventsListeners") or [])
    if all(config.get(k) == v for k, v in want.items()) and "jboss-logging" in listeners:
        return
    if "jboss-logging" not in listeners:
        listeners.append("jboss-logging")
    api.admin("PUT", realm, "/events/config", body={**config, **want, "eventsListeners": listeners})


def _ensure_client(api: KeycloakRest, realm: str, rep: Mapping[str, Any]) -> str:
    found = client_uuid(api, realm, str(rep["clientId"]))
    if found:
        return found
    api.admin("POST", realm, "/clients", body=dict(rep))
    created = client_uuid(api, realm, str(rep["clientId"]))
    if created is None:
        raise PacsguardError(f"Keycloak created client {rep['clientId']!r} but cannot find it")
    return created


def _ensure_service_account_roles(api: KeycloakRest, realm: str, client: str, wanted: list[str]) -> None:
    """Exactly `wanted` realm-management roles on the client's service account (least privilege)."""
    sa = api.admin("GET", realm, f"/clients/{path_segment(client)}/service-account-user")
    rm = client_uuid(api, realm, "realm-management")
    if rm is None:
        raise PacsguardError(f"realm {realm!r} has no realm-management client")
    path = f"/users/{path_segment(sa['id'])}/role-mappings/clients/{path_segment(rm)}"
    have = {r["name"]: r for r in api.admin("GET", realm, path) or []}
    add = [api.admin("GET", realm, f"/clients/{path_segment(rm)}/roles/{path_segment(name)}") for name in wanted if name not in have]
    extra = [rep for name, rep in have.items() if name not in wanted]
    if add:
        api.admin("POST", realm, path, body=add)
    if extra:
        api.admin("DELETE", realm, path, body=extra)


def ensure_realm(api: KeycloakRest, recipe: dict[str, Any], secret_dir: Path, progress: Progress = _quiet) -> None:
    """Create or complete the recipe's realm; safe to run again (writes only what is missing)."""
    spec = recipe["realm"]
    realm = spec["name"]
    if _exists(api, realm, "") is None:
        progress(f"creating realm {realm!r}")
        api.call("POST", f"{api.base_url}/admin/realms", body={"realm": realm, "enabled": True})
    _ensure_events(api, realm)
    for role in spec["roles"]:
        if _exists(api, realm, f"/roles/{path_segment(role['name'])}") is None:
            api.admin("POST", realm, "/roles", body={"name": role["name"], "description": role["description"]})
    _ensure_client(api, realm, {"clientId": spec["login_client"], "enabled": True, "publicClient": True,
                                "directAccessGrantsEnabled": True, "standardFlowEnabled": False})
    connector = _ensure_client(api, realm, {
        "clientId": spec["connector_client"], "enabled": True, "publicClient": False,
        "clientAuthenticatorType": "client-secret", "serviceAccountsEnabled": True,
        "standardFlowEnabled": False, "directAccessGrantsEnabled": False})
    _ensure_service_account_roles(api, realm, connector, list(spec["connector_roles"]))
    secret = api.admin("GET", realm, f"/clients/{path_segment(connector)}/client-secret")
    _write_secret(secret_dir / "connector-secret", str(secret["value"]))

    users_file = secret_dir / "users.json"
    passwords: dict[str, str] = json.loads(users_file.read_text()) if users_file.exists() else {}
    for user in spec["users"]:
        name = user["username"]
        found = find_user(api, realm, name)
        if found is None:
            passwords[name] = passwords.get(name) or secrets.token_urlsafe(18)
            create_user(api, realm, name, SecretStr(passwords[name]), user.get("roles", []),
                        user["first_name"], user["last_name"])
            continue
        if name not in passwords:  # a user we have no password for: give it one we keep
            passwords[name] = secrets.token_urlsafe(18)
            api.admin("PUT", realm, f"/users/{path_segment(found['id'])}/reset-password",
                      body={"type": "password", "value": SecretStr(passwords[name]), "temporary": False})
        grant_realm_roles(api, realm, str(found["id"]), user.get("roles", []))
    _write_secret(users_file, json.dumps(passwords, indent=2))


# ------------------------------------------------------------------ report


def describe(port: int) -> dict[str, Any]:
    state = status(port)
    if state is None:
        return {"running": False, "port": port}
    return {"running": True, "ready": _ready(state.url), "rss_bytes": rss_bytes(state), **state.public()}
