"""An event sent long after it happened raises nothing; `status` says why (issue 21, item 1).

The README's old curl example carried a timestamp ten days back: the post answered 201,
no alert came, and nothing said that every windowed rule had looked past it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pacsguard.cli import app
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from testnode import TEST_SALT
from typer.testing import CliRunner


def send(cluster: Cluster, settings: Settings, at: dt.datetime) -> None:
    event = {"timestamp": at.isoformat().replace("+00:00", "Z"), "app": "cloudpacs", "action": "user-login",
             "outcome": "failure", "user": "dr.smith", "source_ip": "81.2.69.142"}
    cluster.request("POST", f"/{settings.index('events_data_stream')}/_doc", params={"op_type": "create",
                    "refresh": "true"}, body={"message": json.dumps(event)})


def status(settings: Settings, tmp_path: Path) -> dict:
    sfile = tmp_path / "settings.json"
    sfile.write_text(json.dumps({"cluster": {"url": settings.cluster.url}, "id_prefix": settings.id_prefix,
                                 "namespace": settings.namespace, "pseudonymization": {"salt": TEST_SALT}}))
    text = CliRunner().invoke(app, ["--settings", str(sfile), "status"])
    data = CliRunner().invoke(app, ["--settings", str(sfile), "--json", "status"])
    assert text.exit_code == 0, text.output
    return {"text": text.output, "data": json.loads(data.output)}


def test_status_says_an_event_arrived_too_late_for_the_rules(pack: Settings, cluster: Cluster,
                                                             tmp_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    send(cluster, pack, now)
    fresh = status(pack, tmp_path)
    assert not any(x.startswith("late ") for x in fresh["text"].splitlines()), fresh["text"]
    assert fresh["data"]["late_event"] is None

    send(cluster, pack, now - dt.timedelta(days=10))
    late = status(pack, tmp_path)
    line = next(x for x in late["text"].splitlines() if x.startswith("late "))
    assert "10d" in line, line
    assert "so those rules never see it" in line and "1a" in line and "current timestamps" in line, line
    info = late["data"]["late_event"]
    assert "1a" in info["missed_by"]
    assert info["late_seconds"] >= 10 * 86400 - 60
