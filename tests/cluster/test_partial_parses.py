"""Partial parses on a real node, one per format: an event whose body is partly garbled is
indexed with every field that could be read, tagged pacsguard-partial with the problem in
error.message, and reaches the rules (signal 3 reads only its action and actor); the failure
index keeps only what yields nothing usable (the Keycloak case: tests/cluster/test_directory.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from pacsguard.collector.atna_envelope import atna_message
from pacsguard.core.connection import Cluster
from pacsguard.core.content import content_path
from pacsguard.core.settings import Settings
from pacsguard.engines import run_monitor
from pacsguard.rules.compiler import render_monitor
from pacsguard.rules.model import load_rules

pytestmark = pytest.mark.cluster
ATNA_INPUTS = Path(__file__).resolve().parents[2] / "pipelines" / "atna" / "_dev" / "test" / "pipeline"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def atna_cut_after_the_actor() -> str:
    """Our role-change audit message, dated now and cut inside its AuditSourceIdentification."""
    xml = (ATNA_INPUTS / "security-alert-roles-changed.xml").read_text().replace("2026-03-02T14:20:00.000Z", now_iso())
    cut = xml[:xml.index('<AuditSourceTypeCode csd-code="4"') + 20]
    message, error = atna_message(cut, cut, "northpacs", None, 1 << 20)
    assert error is None, error
    return message


def orthanc_role_change_with_garbled_log_data() -> str:
    return json.dumps({"SourcePlugin": "authorization", "Timestamp": now_iso(), "UserId": "u-77", "UserName": "orth.admin",
                       "ResourceType": "None", "ResourceId": "", "Action": "update-user-roles",
                       "Base64LogData": base64.b64encode(b'{"User": "nick", "Roles": ["pacs-adm').decode()})


def generic_grant_with_a_bad_outcome() -> str:
    return json.dumps({"timestamp": now_iso(), "app": "cloudpacs", "action": "role-grant", "outcome": "done",
                       "user": "gen.admin", "target_user": "nick", "roles_changed": ["pacs-admin"],
                       "instances": "several"})


CASES = [
    pytest.param(atna_cut_after_the_actor, "admin.haddad", "role-grant", "malformed XML: unclosed token", id="atna"),
    pytest.param(orthanc_role_change_with_garbled_log_data, "orth.admin", "permission-change",
                 "log data is not valid JSON", id="orthanc"),
    pytest.param(generic_grant_with_a_bad_outcome, "gen.admin", "role-grant",
                 "event.outcome [done] is not one of", id="generic"),
]


@pytest.mark.parametrize(("message", "actor", "action", "problem"), CASES)
def test_a_partly_garbled_event_is_indexed_tagged_and_raises_signal_3(
        pack: Settings, message: Any, actor: str, action: str, problem: str) -> None:
    cluster = Cluster.connect(pack.cluster)
    stream = pack.index("events_data_stream")
    res = cluster.request("POST", f"/{stream}/_bulk",
                          body='{"create":{}}\n' + json.dumps({"message": message()}) + "\n")
    assert not res["errors"], res["items"]
    cluster.request("POST", f"/{stream},{pack.index('failures')}/_refresh")

    failures = cluster.request("GET", f"/{pack.index('failures')}/_count", ok_missing=True) or {"count": 0}
    assert failures["count"] == 0
    (hit,) = cluster.request("POST", f"/{stream}/_search")["hits"]["hits"]
    doc = hit["_source"]
    assert doc["tags"] == ["pacsguard-partial"]
    assert doc["error"]["message"].startswith("partly parsed: ") and problem in doc["error"]["message"]
    assert (doc["event"]["action"], doc["user"]["name"]) == (action, actor)

    signal_3 = next(r for r in load_rules(content_path("detections")) if r.signal == "3")
    fired = run_monitor(cluster, render_monitor(signal_3, pack), period_end=dt.datetime.now(dt.timezone.utc)).fired()
    assert any(entity.startswith(f"{actor}|{action}|") for entity in fired), fired  # the joined key


def test_a_sender_cannot_write_the_pipelines_scratch_fields(pack: Settings) -> None:
    """A structured document that brings its own _pg (a partial-parse note, related users) loses it."""
    cluster = Cluster.connect(pack.cluster)
    stream = pack.index("events_data_stream")
    doc = {"timestamp": now_iso(), "app": "cloudpacs", "action": "user-login", "user": "ann",
           "_pg": {"partial": ["forged problem"], "related_user": ["mallory"], "logdata_garbled": True}}
    res = cluster.request("POST", f"/{stream}/_bulk", body='{"create":{}}\n' + json.dumps(doc) + "\n")
    assert not res["errors"], res["items"]
    cluster.request("POST", f"/{stream}/_refresh")
    (hit,) = cluster.request("POST", f"/{stream}/_search")["hits"]["hits"]
    got = hit["_source"]
    assert "tags" not in got and "error" not in got and got["related"]["user"] == ["ann"], got
