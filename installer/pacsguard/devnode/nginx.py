"""nginx from Debian's packages, run privately for development and tests.

Each instance lives in a run directory of its own (configuration, pid file, logs, temporary
files): nothing of the system-wide nginx (/etc/nginx, /var/log/nginx) is read or changed,
it listens on 127.0.0.1 only, and as root it runs as the local node's unprivileged user.
Two users: the PACS front (pacs.py) and the collector balancer (``balancer_up``): several
``pacsguard collect`` instances behind one address, HTTP through an ``upstream`` and syslog
over TCP through the ``stream`` module (Debian's ``libnginx-mod-stream``) with the PROXY
protocol, the set-up docs/collector.md ("Several collectors behind one address") describes.

Debian packages are installed the same way for every development service here
(``install_packages``): apt-get as root, a clear error naming the command otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pacsguard.core.errors import PacsguardError
from pacsguard.devnode import local
from pacsguard.devnode.local import Progress

NGINX = "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
NGINX_PACKAGES = {"nginx-light": NGINX}
STREAM_PACKAGES = {**NGINX_PACKAGES, "libnginx-mod-stream": STREAM_MODULE}
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
BALANCER_STATE = "balancer.json"


def _quiet(_: str) -> None:
    return None


# ------------------------------------------------------------ Debian packages


def missing_packages(need: dict[str, str]) -> list[str]:
    """The packages (of {package: a file it installs}) whose file is absent."""
    return [pkg for pkg, path in need.items() if not os.path.exists(path)]


def install_packages(need: dict[str, str], progress: Progress = _quiet) -> None:
    """apt-get install the packages of ``need`` that are missing (root only); a clear error otherwise."""
    missing = missing_packages(need)
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PacsguardError(f"missing {', '.join(missing)}: install them with "
                             f"`apt-get install -y {' '.join(need)}` (needs root and Debian/Ubuntu)")
    progress(f"installing {' '.join(missing)} from Debian's packages")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or missing_packages(need):
        raise PacsguardError(f"apt-get install {' '.join(missing)} failed: {done.stderr.strip()[-500:]}")


# ------------------------------------------------------------ a private nginx


def config(run: Path, http: str = "", stream: str = "") -> str:
    """A whole nginx.conf kept inside ``run``: the ``http`` and ``stream`` blocks' contents as given."""
    logs, tmp = run / "logs", run / "nginx-tmp"
    temp = "\n".join(f"    {name}_temp_path {tmp / name};" for name in TEMP_DIRS)
    module = f"load_module {STREAM_MODULE};\n" if stream else ""
    if "access_log" not in http:
        temp += f"\n    access_log {logs / 'access.log'};"  # not nginx's default under /var/log
    blocks = f"http {{\n{temp}\n{http}}}\n" if http else ""
    if stream:
        blocks += f"stream {{\n{stream}}}\n"
    return f"""# written by pacsguard.devnode.nginx
{module}daemon off;
master_process on;
worker_processes 1;
pid {run / 'nginx.pid'};
error_log {logs / 'nginx-error.log'} notice;
events {{ worker_connections 1024; }}
{blocks}"""


def prepare(run: Path) -> None:
    """A fresh run directory with the folders nginx writes to."""
    if run.exists():
        shutil.rmtree(run)
    for d in (run / "logs", *[run / "nginx-tmp" / n for n in TEMP_DIRS]):
        d.mkdir(parents=True, exist_ok=True)


def as_node_user(run: Path, parents: Sequence[Path]) -> dict[str, object]:
    """Popen arguments that drop root to the node's user, which gets ``run`` (and can traverse ``parents``)."""
    if os.geteuid() != 0:
        return {}
    uid, gid = local.node_user()
    for d in parents:
        d.chmod(d.stat().st_mode | 0o011)
    local.chown_tree(run, uid, gid)
    return {"user": uid, "group": gid, "extra_groups": []}


def start(run: Path, text: str, parents: Sequence[Path] = ()) -> subprocess.Popen[bytes]:
    """Write ``text`` as <run>/nginx.conf, check it (``nginx -t``) and start nginx on it."""
    conf = run / "nginx.conf"
    conf.write_text(text)
    kwargs = as_node_user(run, parents)
    error_log = run / "logs" / "nginx-error.log"
    command = [NGINX, "-p", str(run), "-c", str(conf), "-e", str(error_log)]
    checked = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True, check=False,
                             **kwargs)  # type: ignore[call-overload]
    if checked.returncode != 0:
        raise PacsguardError(f"nginx refused {conf}: {checked.stderr.strip()[-800:]}")
    with (run / "logs" / "nginx-stderr.log").open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(run), **kwargs)  # type: ignore[call-overload]


# ------------------------------------------------------------ the collector balancer


def balancer_http(port: int, backends: Sequence[str], host: str = "127.0.0.1") -> str:
    """The http block of docs/collector.md: FHIR senders -> every collector's --http (keep the two in step)."""
    servers = "\n".join(f"        server {b} max_fails=1 fail_timeout=10s;" for b in backends)
    return f"""    upstream pacsguard_fhir {{
{servers}
        keepalive 16;
    }}
    server {{
        listen {host}:{port};
        client_max_body_size 16m;
        location / {{
            proxy_pass http://pacsguard_fhir;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # nginx passes a POST to the next collector only when it could not send it to the
            # first (refused or timed out connecting): never twice by itself. A collector that
            # dies with the request makes a 502; the sender retries with the same
            # Idempotency-Key, and the retry lands once whichever collector takes it.
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
        }}
    }}
"""


def balancer_stream(port: int, backends: Sequence[str], host: str = "127.0.0.1") -> str:
    """The stream block of docs/collector.md: syslog over TCP -> every collector's --tcp, with the
    PROXY protocol header naming the sender (collector option --proxy-from)."""
    servers = "\n".join(f"        server {b} max_fails=1 fail_timeout=10s;" for b in backends)
    return f"""    upstream pacsguard_syslog {{
{servers}
    }}
    server {{
        listen {host}:{port};
        proxy_pass pacsguard_syslog;
        proxy_protocol on;
        proxy_connect_timeout 2s;
        proxy_timeout 10m;
    }}
"""


@dataclass
class BalancerState:
    pid: int
    http_port: int
    tcp_port: int
    run_dir: str
    error_log: str

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def balancer_up(run: Path, http_port: int, http_backends: Sequence[str], tcp_port: int,
                tcp_backends: Sequence[str], parents: Sequence[Path] = (), timeout: float = 20.0) -> BalancerState:
    """nginx on 127.0.0.1: HTTP on ``http_port`` over ``http_backends``, TCP on ``tcp_port`` over ``tcp_backends``."""
    missing = missing_packages(STREAM_PACKAGES)
    if missing:
        raise PacsguardError(f"missing {', '.join(missing)}: `apt-get install -y {' '.join(STREAM_PACKAGES)}`")
    prepare(run)
    proc = start(run, config(run, balancer_http(http_port, http_backends), balancer_stream(tcp_port, tcp_backends)),
                 parents)
    state = BalancerState(proc.pid, http_port, tcp_port, str(run), str(run / "logs" / "nginx-error.log"))
    (run / BALANCER_STATE).write_text(json.dumps(asdict(state)))
    deadline = time.monotonic() + timeout
    while not (local.port_open(http_port) and local.port_open(tcp_port)):
        if proc.poll() is not None or time.monotonic() > deadline:
            balancer_down(run)
            raise PacsguardError(f"nginx did not listen on {http_port} and {tcp_port}; its log "
                                 f"({state.error_log}):\n{local.tail(state.error_log)}")
        time.sleep(0.1)
    return state


def balancer_down(run: Path, timeout: float = 20.0) -> bool:
    """Stop the balancer started in ``run`` (by its pid); True if it was running."""
    try:
        state = BalancerState(**json.loads((run / BALANCER_STATE).read_text()))
    except (OSError, ValueError, TypeError):
        return False
    running = local.stop_pid(state.pid, "nginx", signal.SIGQUIT, timeout, group=True)
    (run / BALANCER_STATE).unlink(missing_ok=True)
    return running
