"""`pacsguard console` as a background process next to the local node: started by `up`, stopped by `down`.

Like `watch` (services/background.py): its pid, URL and log sit in the node's
run dir, so `down` stops exactly the console `up` started and a second `up`
reuses a running one. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pacsguard.core.errors import PacsguardError
from pacsguard.devnode.local import run_dir_for

DEFAULT_PORT = 8765


def _state(node_port: int) -> Path:
    return run_dir_for(node_port) / "console.json"


def _alive(pid: int) -> bool:
    try:
        return b"console" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def running(node_port: int) -> dict[str, object] | None:
    path = _state(node_port)
    if not path.exists():
        return None
    info: dict[str, object] = json.loads(path.read_text())
    return info if _alive(int(str(info["pid"]))) else None


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(node_port: int, url: str, settings_file: Path | None = None,
          console_port: int = DEFAULT_PORT, ready_timeout: float = 20.0) -> dict[str, object]:
    """Start the console (or return the running one). Another program on console_port (a second
    local node's console, say) makes it take a free port instead; the URL returned is where it answers."""
    current = running(node_port)
    if current:
        return {**current, "started": False}
    if not _port_free(console_port):
        console_port = _free_port()
    run_dir = run_dir_for(node_port)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "console.log"
    args = [sys.executable, "-m", "pacsguard.cli", "--url", url]
    if settings_file:
        args += ["--settings", str(settings_file)]
    args += ["console", "--host", "127.0.0.1", "--port", str(console_port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=dict(os.environ))
    info: dict[str, object] = {"pid": proc.pid, "log": str(log), "url": f"http://127.0.0.1:{console_port}/"}
    deadline = time.monotonic() + ready_timeout
    while not _answers(console_port):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.terminate()
            raise PacsguardError(f"the console did not start on 127.0.0.1:{console_port}; see {log}")
        time.sleep(0.2)
    _state(node_port).write_text(json.dumps(info))
    return {**info, "started": True}


def stop(node_port: int, timeout: float = 10.0) -> bool:
    info = running(node_port)
    if info is None:
        _state(node_port).unlink(missing_ok=True)
        return False
    pid = int(str(info["pid"]))
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    _state(node_port).unlink(missing_ok=True)
    return True
