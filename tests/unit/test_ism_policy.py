"""The event data stream's ISM policy, checked by structure (no Index Management plugin here):
it attaches to the data stream, rolls over and deletes by the retention settings, and is an
optional object (skipped, not blocked, where the plugin does not run)."""

from __future__ import annotations

from pacsguard.core.settings import load_settings
from pacsguard.packobjects import availability
from pacsguard.services.install import load_objects


def policy(**retention: str) -> dict:
    settings = load_settings(overrides={"namespace": "ward", "retention": retention}, environ={})
    [obj] = [o for o in load_objects(settings) if o.kind == "ism_policy"]
    assert obj.id == "pacsguard-ward-events-lifecycle"
    return obj.body["policy"]


def test_the_policy_rolls_over_and_deletes_by_the_retention_settings() -> None:
    body = policy(events="3650d", rollover_age="7d", rollover_primary_shard_size="10gb")
    states = {s["name"]: s for s in body["states"]}
    assert body["default_state"] in states
    assert all(t["state_name"] in states for s in body["states"] for t in s["transitions"])
    hot = states[body["default_state"]]
    assert hot["actions"] == [{"rollover": {"min_index_age": "7d", "min_primary_shard_size": "10gb"}}]
    [to_delete] = hot["transitions"]
    assert to_delete["conditions"] == {"min_index_age": "3650d"}
    assert states[to_delete["state_name"]]["actions"] == [{"delete": {}}]
    # ISM matches a data stream's backing indices by the data stream's name
    assert [t["index_patterns"] for t in body["ism_template"]] == [["logs-pacs.audit-ward"]]


def test_the_defaults_keep_events_for_years() -> None:
    [to_delete] = next(s for s in policy()["states"] if s["name"] == "hot")["transitions"]
    assert int(to_delete["conditions"]["min_index_age"].removesuffix("d")) >= 365 * 6


def test_the_policy_is_skipped_where_index_management_does_not_run() -> None:
    assert availability("ism_policy", {"opensearch-alerting"}) == "skipped"
    assert availability("ism_policy", {"opensearch-index-management"}) == "usable"
