"""A local PACS front for development and CI: Orthanc with its DICOMweb plugin behind nginx.

Both come from Debian's packages (`nginx-light`, `orthanc`, `orthanc-dicomweb`), the way a
hospital would run them; nothing is downloaded by this module. Each instance (one per nginx
port) lives under <cache>/pacs/run/<port>/ with its own configuration files, storage, logs
and pid files; nothing of the system-wide services (/etc/nginx, /etc/orthanc,
/var/lib/orthanc) is read or changed. Both listen on 127.0.0.1 (Orthanc refuses remote
clients and serves no DICOM port); as root they run as the node's unprivileged user.

nginx writes its access log in the documented JSON format of docs/sources/proxy.md
(<run>/logs/access.log): `pacsguard collect --file <that file>` ships it. The user header
(X-Auth-Request-User) is what an auth proxy would set; this test front takes it from the
client, which a production front must never do (docs/sources/proxy.md says how).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from pacsguard.core.errors import PacsguardError
from pacsguard.devnode import local, nginx
from pacsguard.devnode.local import Progress

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
STATE_FILE = "pacs.json"
LOGIN_PATH = "/login"  # the front's login endpoint (pack setting sources.proxy.login_paths)

# The log_format of docs/sources/proxy.md, as one nginx string (keep the two in step).
LOG_FORMAT = (
    "'{\"msec\":$msec,\"time\":\"$time_iso8601\",\"remote_addr\":\"$remote_addr\","
    "\"x_forwarded_for\":\"$http_x_forwarded_for\",\"method\":\"$request_method\","
    "\"uri\":\"$request_uri\",\"status\":$status,\"bytes\":$body_bytes_sent,"
    "\"user_agent\":\"$http_user_agent\",\"user\":\"$http_x_auth_request_user\","
    "\"remote_user\":\"$remote_user\",\"request_time\":$request_time,\"host\":\"$host\"}'"
)


def _quiet(_: str) -> None:
    return None


@dataclass
class PacsState:
    nginx_pid: int
    orthanc_pid: int
    port: int  # nginx
    orthanc_port: int
    url: str  # the front (nginx)
    dicomweb_url: str  # DICOMweb root through nginx
    run_dir: str
    access_log: str
    orthanc_log: str
    nginx_error_log: str

    @classmethod
    def load(cls, path: Path) -> PacsState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


PACKAGES = {"nginx-light": nginx.NGINX, "orthanc": ORTHANC, "orthanc-dicomweb": DICOMWEB_PLUGIN}


def missing_software() -> list[str]:
    """The Debian packages whose programs are not installed."""
    return nginx.missing_packages(PACKAGES)


def install_software(progress: Progress = _quiet) -> None:
    """apt-get install the packages that are missing (root only); a clear error otherwise."""
    nginx.install_packages(PACKAGES, progress)


def pacs_root() -> Path:
    return local.cache_root() / "pacs"


def run_dir_for(port: int) -> Path:
    return pacs_root() / "run" / str(port)


def _state_file(port: int) -> Path:
    return run_dir_for(port) / STATE_FILE


def status(port: int) -> PacsState | None:
    """Our front on <port> when both of its processes run."""
    state = PacsState.load(_state_file(port))
    if state and local.pid_runs(state.nginx_pid, "nginx") and local.pid_runs(state.orthanc_pid, "Orthanc"):
        return state
    return None


def orthanc_config(run: Path, orthanc_port: int) -> dict[str, object]:
    storage = run / "orthanc-db"
    return {
        "Name": f"pacsguard-dev-{orthanc_port}",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpServerEnabled": True,
        "HttpPort": orthanc_port,
        "RemoteAccessAllowed": False,  # loopback clients only: nginx is the front door
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado"},
    }


def nginx_config(run: Path, port: int, orthanc_port: int) -> str:
    logs = run / "logs"
    return nginx.config(run, http=f"""    log_format pacsguard_json escape=json
        {LOG_FORMAT};
    access_log {logs / 'access.log'} pacsguard_json;
    client_max_body_size 512m;
    server {{
        listen 127.0.0.1:{port};
        server_name pacs.local;
        # The auth proxy's login endpoint (here it only answers; a real front runs
        # oauth2-proxy / auth_request and sets X-Auth-Request-User itself).
        location = {LOGIN_PATH} {{ return 204; }}
        location /app/ {{ default_type text/plain; return 200 "viewer asset\\n"; }}
        location /dicom-web/ {{
            proxy_pass http://127.0.0.1:{orthanc_port}/dicom-web/;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 120s;
        }}
        location /wado {{ proxy_pass http://127.0.0.1:{orthanc_port}/wado; }}
    }}
""")


def _wait_http(url: str, timeout: float, what: str, log: Path, pid: int, program: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not local.pid_runs(pid, program):
            raise PacsguardError(f"{what} exited at start-up; its log ({log}):\n{local.tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise PacsguardError(f"{what} did not answer {url} within {timeout:.0f}s; its log ({log}):\n{local.tail(log)}")


def up(port: int, progress: Progress = _quiet, fresh: bool = False, timeout: float = 60.0) -> PacsState:
    """Start (or reuse) Orthanc + nginx with the front on 127.0.0.1:<port>."""
    current = status(port)
    if current and not fresh:
        progress(f"PACS front already running on {current.url}")
        return current
    down(port)
    missing = missing_software()
    if missing:
        raise PacsguardError(f"missing {', '.join(missing)}: `apt-get install -y {' '.join(PACKAGES)}`")
    if not local.bindable(port):
        raise PacsguardError(f"port {port} is taken by another program")
    from pacsguard.devnode.keycloak import free_port

    orthanc_port = free_port()
    run = run_dir_for(port)
    nginx.prepare(run)
    logs = run / "logs"
    (run / "orthanc-db").mkdir()
    (run / "orthanc.json").write_text(json.dumps(orthanc_config(run, orthanc_port), indent=2))
    parents = (local.cache_root(), pacs_root(), pacs_root() / "run")  # traversable by the node user
    kwargs = nginx.as_node_user(run, parents)
    orthanc_log = logs / "orthanc.log"
    progress(f"starting Orthanc (DICOMweb) on 127.0.0.1:{orthanc_port}")
    with orthanc_log.open("ab") as out:
        orthanc = subprocess.Popen([ORTHANC, str(run / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(run),
                                   **kwargs)  # type: ignore[call-overload]
    (run / "orthanc.pid").write_text(str(orthanc.pid))
    error_log = logs / "nginx-error.log"
    try:
        _wait_http(f"http://127.0.0.1:{orthanc_port}/system", timeout, "Orthanc", orthanc_log, orthanc.pid, "Orthanc")
        progress(f"starting nginx on 127.0.0.1:{port}")
        front = nginx.start(run, nginx_config(run, port, orthanc_port), parents)
        state = PacsState(nginx_pid=front.pid, orthanc_pid=orthanc.pid, port=port, orthanc_port=orthanc_port,
                          url=f"http://127.0.0.1:{port}", dicomweb_url=f"http://127.0.0.1:{port}/dicom-web",
                          run_dir=str(run), access_log=str(logs / "access.log"), orthanc_log=str(orthanc_log),
                          nginx_error_log=str(error_log))
        _state_file(port).write_text(json.dumps(asdict(state), indent=2))
        _wait_http(f"{state.url}/dicom-web/studies", timeout, "nginx", error_log, front.pid, "nginx")
    except BaseException:
        down(port)  # by the state file, when it was written
        if orthanc.poll() is None:
            orthanc.kill()
            orthanc.wait(timeout=10)
        raise
    return state


def down(port: int, timeout: float = 20.0) -> bool:
    """Stop only the front this project started on <port> (by its pids). True if something was stopped."""
    state = PacsState.load(_state_file(port))
    if state is None:
        return False
    running = local.pid_runs(state.nginx_pid, "nginx") or local.pid_runs(state.orthanc_pid, "Orthanc")
    # graceful: finishes requests, flushes the log; then the session each was started in
    local.stop_pid(state.nginx_pid, "nginx", signal.SIGQUIT, timeout, group=True)
    local.stop_pid(state.orthanc_pid, "Orthanc", signal.SIGTERM, timeout, group=True)
    _state_file(port).unlink(missing_ok=True)
    return running
