"""`pacsguard console` as a background process next to the local node: started by `up`, stopped by `down`
(services/background.py keeps its pid, URL and log in the node's run dir). It binds 127.0.0.1 only."""

from __future__ import annotations

import socket
from pathlib import Path

from pacsguard.devnode.local import bindable
from pacsguard.services import background

DEFAULT_PORT = 8765
NAME = "console"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def running(node_port: int) -> dict[str, object] | None:
    return background.running(node_port, NAME)


def start(node_port: int, url: str, settings_file: Path | None = None,
          console_port: int = DEFAULT_PORT, ready_timeout: float = 20.0) -> dict[str, object]:
    """Start the console (or return the running one). Another program on console_port (a second
    local node's console, say) makes it take a free port instead; the URL returned is where it answers."""
    current = running(node_port)
    if current:
        return {**current, "started": False}
    if not bindable(console_port):
        console_port = _free_port()
    args = background.cli_args(url, settings_file, "console", "--host", "127.0.0.1", "--port", str(console_port))
    return background.start_process(node_port, NAME, args, {"url": f"http://127.0.0.1:{console_port}/"},
                                    ready=lambda: _answers(console_port), ready_timeout=ready_timeout)


def stop(node_port: int, timeout: float = 10.0) -> bool:
    return background.stop(node_port, NAME, timeout)
