"""A pack whose user directory is a CSV export, the pack's rules by signal, and raw messages sent
through its router: shared by the directory and the identity tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pacsguard.core.connection import Cluster
from pacsguard.core.content import content_path
from pacsguard.core.settings import Settings
from pacsguard.rules.model import Rule, load_rules
from testnode import installed_pack


def pack_rule(signal: str) -> Rule:
    return next(r for r in load_rules(content_path("detections")) if r.signal == signal)


@contextmanager
def csv_directory_pack(cluster_url: str, prefix: str, namespace: str, csv_text: str,
                       folder: Path) -> Iterator[Settings]:
    """The pack installed with the directory job reading csv_text (not Keycloak); purged after."""
    csv_file = folder / "directory.csv"
    csv_file.write_text(csv_text)
    with installed_pack(cluster_url, prefix, namespace,
                        sources={"directory": {"csv_file": str(csv_file), "from_keycloak": False}}) as settings:
        yield settings


def send_messages(cluster: Cluster, settings: Settings, messages: list[str]) -> None:
    """Raw messages through the router (as a shipper sends them), visible to searches on return."""
    stream = settings.index("events_data_stream")
    body = "".join('{"create":{}}\n' + json.dumps({"message": m}) + "\n" for m in messages)
    res = cluster.request("POST", f"/{stream}/_bulk", body=body)
    assert not res["errors"], res["items"][:1]
    cluster.request("POST", f"/{stream},{settings.index('failures')}/_refresh")
