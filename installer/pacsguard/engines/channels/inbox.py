"""The local inbox: a JSON-lines file the pack's engine delivers to while no channel is configured.

A first alert on a fresh install then lands somewhere a person finds it (`pacsguard alerts list`
and `up` name the file) instead of reaching nobody. One line per delivery: when, the delivery id,
the subject and text a person reads, and the alert as a webhook receives it. A delivery id
already in the file is not written again (a restarted `watch` resends what it had not recorded).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pacsguard.core.settings import Channel, Settings, state_dir
from pacsguard.engines.channels.attempt import AttemptOutcome
from pacsguard.engines.channels.message import AlertMessage

NAME = "inbox"
_lock = threading.Lock()  # delivery workers append from several threads


def inbox_path(settings: Settings) -> Path:
    return state_dir() / f"inbox-{settings.id_prefix}-{settings.namespace}.jsonl"


def inbox_at(path: Path) -> Channel:
    return Channel(name=NAME, type="inbox", path=path)


def inbox_channel(settings: Settings) -> Channel:
    """The built-in channel of this installation's inbox."""
    return inbox_at(inbox_path(settings))


def read_inbox(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


class InboxTransport:
    def __init__(self, path: Path) -> None:
        self.path = path

    def attempt(self, message: AlertMessage, delivery_id: str, attempt: int, timeout: float) -> AttemptOutcome:
        line = json.dumps({"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "delivery_id": delivery_id, "subject": message.subject, "text": message.text,
                           "alert": message.alert}, separators=(",", ":")) + "\n"
        try:
            with _lock:
                if any(e.get("delivery_id") == delivery_id for e in read_inbox(self.path)):
                    return AttemptOutcome("delivered", "already there", str(self.path))
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as handle:
                    handle.write(line)
        except OSError as exc:
            return AttemptOutcome("permanent", "not written", f"{self.path}: {exc.strerror or exc}")
        return AttemptOutcome("delivered", "written", str(self.path))
