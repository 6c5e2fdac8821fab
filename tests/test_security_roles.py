"""Least-privilege roles (applied where the Security plugin runs): each role reaches only
the pack's own indices, and only the rights its user needs (no cluster)."""

from __future__ import annotations

import json

from pacsguard.services.install import load_objects
from pacsguard.core.settings import load_settings


def roles() -> dict[str, dict]:
    settings = load_settings(environ={})
    return {o.id: o.body for o in load_objects(settings, "s" * 32) if o.kind == "security_role"}


def test_every_role_is_scoped_to_the_pack() -> None:
    settings = load_settings(environ={})
    allowed = {settings.index(key) for key in type(settings.indices).model_fields}
    found = roles()
    assert set(found) == {f"pacsguard-default-{r}" for r in
                          ("installer", "collector", "jobs", "analyst", "failure-reviewer")}
    for name, body in found.items():
        for perm in body.get("index_permissions", []):
            assert set(perm["index_patterns"]) <= allowed, name
        assert "*" not in body.get("cluster_permissions", []) and "all_access" not in str(body), name


def test_collector_only_appends_and_analysts_never_see_raw_failures() -> None:
    found = roles()
    settings = load_settings(environ={})
    collector = found["pacsguard-default-collector"]["index_permissions"]
    assert all(p["allowed_actions"] == ["create_doc"] for p in collector)
    analyst_indices = {i for p in found["pacsguard-default-analyst"]["index_permissions"] for i in p["index_patterns"]}
    assert settings.index("failures") not in analyst_indices
    reviewer = found["pacsguard-default-failure-reviewer"]["index_permissions"]
    # reads the (sealed) failures and replays fixed events into the data stream (issue 9)
    assert reviewer == [{"index_patterns": [settings.index("failures")], "allowed_actions": ["read"]},
                        {"index_patterns": [settings.index("events_data_stream")], "allowed_actions": ["create_doc"]}]


def test_the_salt_is_readable_by_the_installer_only() -> None:
    """The salt sits in a stored script, never in a pipeline body; of the pack's roles only the
    installer may read stored scripts (directly or through the cluster state)."""
    settings = load_settings(environ={})
    salt = "S" * 32
    objects = load_objects(settings, salt)
    assert [o.kind for o in objects if salt in json.dumps(o.body)] == ["stored_script"]
    readers = {"cluster:admin/script/get", "cluster_monitor", "cluster:monitor/state", "cluster_all"}
    for role in (o for o in objects if o.kind == "security_role"):
        granted = set(role.body.get("cluster_permissions", []))
        if role.id.endswith("-installer"):
            assert "cluster:admin/script/get" in granted
        else:
            assert not granted & readers, role.id
