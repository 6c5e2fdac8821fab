"""Helpers for tests against the local Keycloak (the `keycloak` fixture is in tests/conftest.py):
real logins through the token endpoint, and reading the event lines a log file gains."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pacsguard.devnode import keycloak as devkc
from pacsguard.idp.keycloak_rest import TokenReply, request_token
from pydantic import SecretStr


@dataclass(frozen=True)
class RealmUser:
    username: str
    id: str
    password: SecretStr


def login(state: devkc.KeycloakState, username: str, password: str | SecretStr) -> TokenReply:
    """A real password login through the token endpoint of the test realm's public client."""
    return request_token(state.url, state.realm, {"grant_type": "password", "client_id": state.login_client,
                                                  "username": username, "password": password})


def event_text(line: str) -> str | None:
    """The event part of a Keycloak log line (console text or a JSON record); None for other lines."""
    line = line.rstrip("\n")
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        logger = record.get("loggerName") or record.get("log.logger") or ""
        return str(record.get("message")) if logger == "org.keycloak.events" else None
    marker = "[org.keycloak.events] ("
    if marker not in line:
        return None
    rest = line.split(marker, 1)[1]
    return rest.split(") ", 1)[1] if ") " in rest else None


class LogWatch:
    """The lines a log file gains after a point: read only what was appended since `mark`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def lines(self) -> list[str]:
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        # A line is complete once its newline is written.
        return [raw.decode("utf-8", errors="replace") for raw in data.split(b"\n")[:-1]]

    def wait_for(self, predicate: Callable[[str], bool], count: int = 1, timeout: float = 60.0) -> list[str]:
        """Event lines (text as logged) matching the predicate on their event text, at least `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines() if (text := event_text(line)) is not None and predicate(text)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.2)
