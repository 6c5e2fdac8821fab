"""The installer against the real node: idempotence, plan, convergence, drift, uninstall."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pacsguard.core.connection import Cluster
from pacsguard.core.content import content_root
from pacsguard.core.settings import Settings
from pacsguard.packobjects import KINDS
from pacsguard.services.install import desired_objects, install, make_plan, status, uninstall, usable_kinds


def owned_objects(cluster: Cluster, settings: Settings) -> list[str]:
    usable = usable_kinds(cluster)
    return [f"{k.name}:{i}" for k in KINDS.values() if k.name in usable
            for i in k.list_ids(cluster, settings.owner, settings.id_prefix)]


def write_event(cluster: Cluster, settings: Settings, user: str) -> None:
    cluster.request("POST", f"/{settings.index('events_data_stream')}/_doc",
                    params={"op_type": "create", "refresh": "true"},
                    body={"timestamp": "2026-11-27T10:00:00Z", "app": "test", "action": "user-login",
                          "user": user, "source_ip": "10.1.2.3"})


def count(cluster: Cluster, index: str) -> int:
    return int(cluster.request("GET", f"/{index}/_count")["count"])


def test_install_creates_everything_and_second_install_changes_nothing(cluster: Cluster, pack_settings: Settings) -> None:
    first = install(cluster, pack_settings, allow_missing_plugins=True)
    usable = usable_kinds(cluster)
    desired = desired_objects(cluster, pack_settings)
    expected = {o.key for o in desired if o.kind in usable}
    assert {f"{c.kind}:{c.id}" for c in first.applied} == expected
    # monitors and channels wait for their plugin; roles apply only where the Security plugin
    # runs, the lifecycle policy where Index Management does (skipped, not a failure); nothing
    # else waits
    waiting = {f"{c.kind}:{c.id}" for c in first.plan.changes if c.action in ("blocked", "skipped")}
    assert waiting == {o.key for o in desired if o.kind not in usable}
    assert all(c.kind in ("monitor", "notification_channel") for c in first.plan.blocked)
    assert all(c.kind in ("security_role", "ism_policy") for c in first.plan.changes if c.action == "skipped")
    if "opensearch-index-management" not in cluster.installed_components()[0]:
        assert any(c.kind == "ism_policy" and c.action == "skipped" for c in first.plan.changes)
    assert first.data_streams == [pack_settings.index("events_data_stream")]

    second = install(cluster, pack_settings, allow_missing_plugins=True)
    assert second.applied == []
    assert second.data_streams == []
    assert second.plan.summary()["unchanged"] == len(expected)

    # The installed pipeline really runs: an event written to the data stream is normalized.
    write_event(cluster, pack_settings, "alice")
    hit = cluster.request("GET", f"/{pack_settings.index('events_data_stream')}/_search")["hits"]["hits"][0]
    assert hit["_source"]["event"]["action"] == "user-login"
    assert hit["_source"]["user"]["name"] == "alice"


def test_plan_after_one_file_change_lists_exactly_that_object(
    cluster: Cluster, pack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(cluster, pack_settings, allow_missing_plugins=True)
    copy = tmp_path / "content"
    shutil.copytree(content_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    generic = copy / "pipelines" / "generic" / "pipeline.yaml"
    generic.write_text(generic.read_text().replace(
        'description: "pacsguard: map', 'description: "pacsguard (tuned): map'))
    monkeypatch.setenv("PACSGUARD_CONTENT", str(copy))

    plan = make_plan(cluster, pack_settings, desired_objects(cluster, pack_settings))
    assert [(c.action, c.kind, c.id) for c in plan.pending] == [
        ("update", "ingest_pipeline", f"{pack_settings.scope}-generic")
    ]
    applied = install(cluster, pack_settings, allow_missing_plugins=True).applied
    assert [(c.action, c.id) for c in applied] == [("update", f"{pack_settings.scope}-generic")]


def test_interrupted_install_converges(cluster: Cluster, pack_settings: Settings) -> None:
    seen: list[str] = []

    def crash_after_three(message: str) -> None:
        seen.append(message)
        if len(seen) == 4:
            raise KeyboardInterrupt  # the operator hits Ctrl-C mid-way

    with pytest.raises(KeyboardInterrupt):
        install(cluster, pack_settings, progress=crash_after_three, allow_missing_plugins=True)
    partial = make_plan(cluster, pack_settings, desired_objects(cluster, pack_settings))
    assert 0 < len(partial.pending) < len(partial.changes)

    resumed = install(cluster, pack_settings, allow_missing_plugins=True)
    assert {c.id for c in resumed.applied} == {c.id for c in partial.pending}
    assert install(cluster, pack_settings, allow_missing_plugins=True).applied == []


def test_status_reports_drift_after_a_hand_edit(cluster: Cluster, pack_settings: Settings) -> None:
    install(cluster, pack_settings, allow_missing_plugins=True)
    assert {o.state for o in status(cluster, pack_settings).objects} <= {"ok", "blocked", "skipped"}

    pipeline_id = f"{pack_settings.scope}-generic"
    live = KINDS["ingest_pipeline"].get(cluster, pipeline_id)
    assert live is not None
    live["processors"].append({"set": {"field": "tags", "value": "hand-edited"}})
    cluster.request("PUT", f"/_ingest/pipeline/{pipeline_id}", body=live)  # keeps the stamp in the description

    rows = {o.id: o for o in status(cluster, pack_settings).objects if o.state not in ("blocked", "skipped")}
    assert rows[pipeline_id].state == "drifted"
    assert all(o.state == "ok" for i, o in rows.items() if i != pipeline_id)
    # install puts the pack's version back
    install(cluster, pack_settings, allow_missing_plugins=True)
    plan = make_plan(cluster, pack_settings, desired_objects(cluster, pack_settings))
    assert not plan.pending


def test_uninstall_removes_every_pack_object_and_keeps_data(cluster: Cluster, pack_settings: Settings) -> None:
    install(cluster, pack_settings, allow_missing_plugins=True)
    write_event(cluster, pack_settings, "bob")
    cluster.request("POST", f"/{pack_settings.index('events_data_stream')}/_doc",
                    params={"op_type": "create", "refresh": "true"}, body={"message": "not an audit event"})
    stream, failures = pack_settings.index("events_data_stream"), pack_settings.index("failures")
    assert count(cluster, stream) == 1 and count(cluster, failures) == 1

    result = uninstall(cluster, pack_settings)
    assert owned_objects(cluster, pack_settings) == []
    assert not cluster.exists(f"/{pack_settings.index('state')}")
    # alerts, response actions and exceptions are records of what happened: data, kept like the events
    assert set(result.kept) == {stream, failures, pack_settings.index("alerts"), pack_settings.index("actions"),
                                pack_settings.index("exceptions")}
    assert count(cluster, stream) == 1 and count(cluster, failures) == 1
    # The kept data stream still takes writes (its pipeline is gone, so raw).
    cluster.request("POST", f"/{stream}/_doc", params={"op_type": "create", "refresh": "true"},
                    body={"@timestamp": "2026-11-27T11:00:00Z", "message": "after uninstall"})
    assert count(cluster, stream) == 2

    # Reinstall attaches the kept data stream to the pack again.
    again = install(cluster, pack_settings, allow_missing_plugins=True)
    assert again.data_streams  # the backing index got its default pipeline back
    write_event(cluster, pack_settings, "carol")
    users = {h["_source"].get("user", {}).get("name")
             for h in cluster.request("GET", f"/{stream}/_search", body={"size": 10})["hits"]["hits"]}
    assert "carol" in users


def test_purge_removes_data_too(cluster: Cluster, pack_settings: Settings) -> None:
    install(cluster, pack_settings, allow_missing_plugins=True)
    write_event(cluster, pack_settings, "dave")
    uninstall(cluster, pack_settings, purge=True)
    stream = pack_settings.index("events_data_stream")
    assert owned_objects(cluster, pack_settings) == []
    assert cluster.request("GET", f"/_data_stream/{stream}", ok_missing=True) is None
    assert not cluster.exists(f"/{pack_settings.index('failures')}")
    assert cluster.request("GET", f"/_index_template/{stream}-retained", ok_missing=True) is None


def test_content_error_names_file_and_line(
    cluster: Cluster, pack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "content"
    shutil.copytree(content_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    broken = copy / "pipelines" / "generic" / "pipeline.yaml"
    lines = broken.read_text().splitlines()
    lines[5] = lines[5] + " {{ no_such_variable }}"
    broken.write_text("\n".join(lines))
    monkeypatch.setenv("PACSGUARD_CONTENT", str(copy))
    from pacsguard.core.render import ContentError

    with pytest.raises(ContentError, match=r"generic/pipeline\.yaml.*no_such_variable"):
        desired_objects(cluster, pack_settings)


def test_status_names_the_cluster_version_and_that_the_pack_supports_it(cluster: Cluster,
                                                                        pack_settings: Settings) -> None:
    from testnode import node_version

    st = status(cluster, pack_settings)
    assert st.cluster_version == cluster.info()["version"]["number"]
    assert st.cluster_version == (node_version() or st.cluster_version)
    line = "3" if st.cluster_version.startswith("3.") else "2.19"
    assert st.cluster_supported and st.cluster_support.startswith(f"supported ({line} line, tested on ")
