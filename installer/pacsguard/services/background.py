"""`watch` as a background process next to the local node: started by `pacsguard up`, stopped by `down`.

Its pid and log file sit in the node's run dir, so `down` stops exactly the
watch that `up` started, and a second `up` reuses a running one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pacsguard.devnode.local import run_dir_for


def _state(port: int) -> Path:
    return run_dir_for(port) / "watch.json"


def _alive(pid: int) -> bool:
    try:
        return b"pacsguard" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def running(port: int) -> dict[str, object] | None:
    path = _state(port)
    if not path.exists():
        return None
    info: dict[str, object] = json.loads(path.read_text())
    return info if _alive(int(str(info["pid"]))) else None


def start(port: int, url: str, settings_file: Path | None = None) -> dict[str, object]:
    """Start `pacsguard watch` against url in the background (or return the one already running)."""
    current = running(port)
    if current:
        return {**current, "started": False}
    run_dir = run_dir_for(port)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "watch.log"
    args = [sys.executable, "-m", "pacsguard.cli", "--url", url]
    if settings_file:
        args += ["--settings", str(settings_file)]
    args.append("watch")
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=dict(os.environ))
    info: dict[str, object] = {"pid": proc.pid, "log": str(log), "url": url}
    _state(port).write_text(json.dumps(info))
    return {**info, "started": True}


def stop(port: int, timeout: float = 30.0) -> bool:
    """Stop the background watch of this port (SIGTERM: it finishes its deliveries first)."""
    info = running(port)
    _state(port).unlink(missing_ok=True) if info is None else None
    if info is None:
        return False
    pid = int(str(info["pid"]))
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    _state(port).unlink(missing_ok=True)
    return True
