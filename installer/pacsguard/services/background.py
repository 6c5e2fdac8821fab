"""Processes `pacsguard up` starts next to the local node (`watch`, the console), stopped by `down`.

Each keeps its pid, log (and URL) in a `<name>.json` in the node's run dir, so
`down` stops exactly what `up` started and a second `up` reuses what runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pacsguard.core.errors import PacsguardError
from pacsguard.devnode.local import pid_runs, run_dir_for, stop_pid


def _state(port: int, name: str) -> Path:
    return run_dir_for(port) / f"{name}.json"


def running(port: int, name: str = "watch") -> dict[str, object] | None:
    path = _state(port, name)
    if not path.exists():
        return None
    info: dict[str, object] = json.loads(path.read_text())
    return info if pid_runs(int(str(info["pid"])), name) else None


def cli_args(url: str, settings_file: Path | None, *command: str) -> list[str]:
    args = [sys.executable, "-m", "pacsguard.cli", "--url", url]
    if settings_file:
        args += ["--settings", str(settings_file)]
    return [*args, *command]


def start_process(port: int, name: str, args: list[str], extra: dict[str, object] | None = None,
                  ready: Callable[[], bool] | None = None, ready_timeout: float = 20.0) -> dict[str, object]:
    """Start `args` in the background as <name> of the node on port (or return the one running).
    With ready, wait until it answers (the process dying or the timeout is an error naming the log)."""
    current = running(port, name)
    if current:
        return {**current, "started": False}
    run_dir = run_dir_for(port)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=dict(os.environ))
    deadline = time.monotonic() + ready_timeout
    while ready is not None and not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.terminate()
            raise PacsguardError(f"{name} did not start; see {log}")
        time.sleep(0.2)
    info: dict[str, object] = {"pid": proc.pid, "log": str(log), **(extra or {})}
    _state(port, name).write_text(json.dumps(info))
    return {**info, "started": True}


def stop(port: int, name: str = "watch", timeout: float = 30.0) -> bool:
    """Stop the background <name> of this port (SIGTERM first: `watch` finishes its deliveries)."""
    info = running(port, name)
    if info is None:
        _state(port, name).unlink(missing_ok=True)
        return False
    stop_pid(int(str(info["pid"])), name, signal.SIGTERM, timeout)
    _state(port, name).unlink(missing_ok=True)
    return True


def start(port: int, url: str, settings_file: Path | None = None) -> dict[str, object]:
    """Start `pacsguard watch` against url in the background."""
    return start_process(port, "watch", cli_args(url, settings_file, "watch"), {"url": url})
