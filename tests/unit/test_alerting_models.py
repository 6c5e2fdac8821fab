"""Every monitor and notification channel the pack renders, checked with the Alerting and
Notifications plugins' own model classes (org.opensearch:common-utils 2.19.4.0, the version
Alerting 2.19.6 bundles), the way their REST handlers parse a create request, followed by
the request's validate() and what the plugin stores.

The plugins cannot run on the test node (no zips on Maven Central), so this is what CI can
know of their verdict without them. The harness (tests/alerting_models/AlertingModels.java)
is compiled here with the dev node's JDK from jars on Maven Central; without Maven Central
these tests fail with the download error, they do not skip.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from alerting_harness import Harness, Verdict, dropped_fields, prepare
from pacsguard import __version__
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings, load_settings
from pacsguard.packobjects import KINDS, PackObject, Stamp
from pacsguard.rules.compiler import channel_objects, monitor_objects

# One channel of every type the settings accept, so every kind of channel config is rendered.
CHANNELS = [
    {"name": "soc-webhook", "type": "webhook", "url": "https://soc.example.org/hooks/pacsguard"},
    {"name": "soc-slack", "type": "slack", "url": "https://hooks.slack.com/services/T000/B000/XXXX"},
    {"name": "soc-chime", "type": "chime", "url": "https://hooks.chime.aws/incomingwebhooks/abc?token=xyz"},
    {"name": "pacs-owner", "type": "smtp", "smtp_account": "hospital-smtp", "recipients": ["pacs-admin@hospital.org"]},
]
PACK = "pack: "
CASE = "case: "


def settings() -> Settings:
    return load_settings(overrides={"pseudonymization": {"salt": "test-salt-0123456789abcdef"},
                                    "notifications": {"channels": CHANNELS}}, environ={})


def as_sent(obj: PackObject, owner: str) -> dict[str, Any]:
    """The body as install sends it: with the pack's stamp (in a monitor's name, a channel's description)."""
    return KINDS[obj.kind].stamped(obj.body, Stamp(owner, __version__, obj.hash))


def doc_level_monitor(index: str) -> dict[str, Any]:
    return {
        "type": "monitor", "name": "doc-level probe", "monitor_type": "doc_level_monitor", "enabled": True,
        "schedule": {"period": {"interval": 1, "unit": "MINUTES"}},
        "inputs": [{"doc_level_input": {"description": "", "indices": [index], "queries": [
            {"id": "grant", "name": "grant", "query": 'event.action:"role-grant"', "tags": ["probe"]}]}}],
        "triggers": [{"document_level_trigger": {
            "name": "probe", "severity": "1", "actions": [],
            "condition": {"script": {"source": "query[tag=probe]", "lang": "painless"}}}}],
    }


def first_bucket_monitor(objects: list[PackObject]) -> dict[str, Any]:
    body = next(o.body for o in objects if o.kind == "monitor" and o.body["monitor_type"] == "bucket_level_monitor")
    return copy.deepcopy(body)


def negative_cases(objects: list[PackObject]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Bodies the real plugins refuse (or accept, as controls), built from the pack's own where possible."""
    no_buckets_path = first_bucket_monitor(objects)
    del no_buckets_path["triggers"][0]["bucket_level_trigger"]["condition"]["buckets_path"]
    wrong_trigger = first_bucket_monitor(objects)
    wrong_trigger["triggers"] = [{"query_level_trigger": {
        "name": "query-level trigger on a bucket monitor", "severity": "1", "actions": [],
        "condition": {"script": {"source": "ctx.results[0].hits.total.value > 0", "lang": "painless"}}}}]
    misplaced_field = first_bucket_monitor(objects)
    misplaced_field["severity"] = "1"  # belongs on a trigger; Monitor.parse skips unknown fields
    def email_channel(config_type: str) -> dict[str, Any]:
        return {"config_id": f"probe-{config_type}", "config": {
            "name": "probe", "config_type": config_type, "is_enabled": True,
            "email": {"email_account_id": "hospital-smtp", "recipient_list": [{"recipient": "a@hospital.org"}]}}}

    return {
        "doc-level on the event data stream": ("monitor", doc_level_monitor("logs-pacs.audit-default")),
        "doc-level on a plain index name": ("monitor", doc_level_monitor("pacs-audit-default")),
        "bucket trigger without buckets_path": ("monitor", no_buckets_path),
        "query-level trigger on a bucket monitor": ("monitor", wrong_trigger),
        "monitor with a misplaced field": ("monitor", misplaced_field),
        "channel of config_type smtp": ("notification_channel", email_channel("smtp")),
        "channel of config_type email": ("notification_channel", email_channel("email")),
    }


@pytest.fixture(scope="module")
def harness() -> Harness:
    try:
        return prepare()
    except PacsguardError as exc:
        error = str(exc)
    # Failed, not skipped: CI has a JDK and Maven Central, so a missing harness is a broken check.
    pytest.fail(f"the Alerting model harness could not be built (it needs a JDK 17 and Maven Central): {error}",
                pytrace=False)


@pytest.fixture(scope="module")
def pack_settings() -> Settings:
    return settings()


@pytest.fixture(scope="module")
def pack_objects(pack_settings: Settings) -> list[PackObject]:
    return monitor_objects(pack_settings) + channel_objects(pack_settings)


@pytest.fixture(scope="module")
def checked(harness: Harness, pack_settings: Settings,
            pack_objects: list[PackObject]) -> dict[str, tuple[Verdict, dict[str, Any]]]:
    """Every pack object and every case, in one JVM run: label -> (verdict, body sent)."""
    items: list[tuple[str, str, dict[str, Any]]] = []
    for obj in pack_objects:
        name = obj.body.get("name") or obj.body.get("config", {}).get("name")
        items.append((obj.kind, f"{PACK}{obj.id} ({name})", as_sent(obj, pack_settings.owner)))
    for label, (kind, body) in negative_cases(pack_objects).items():
        items.append((kind, f"{CASE}{label}", body))
    verdicts = harness.check(items)
    return {v.label: (v, body) for v, (_, _, body) in zip(verdicts, items)}


def pack_verdicts(checked: dict[str, tuple[Verdict, dict[str, Any]]], kind: str) -> list[Verdict]:
    return [v for label, (v, _) in checked.items() if label.startswith(PACK) and v.kind == kind]


def case(checked: dict[str, tuple[Verdict, dict[str, Any]]], label: str) -> Verdict:
    return checked[f"{CASE}{label}"][0]


def test_alerting_accepts_every_monitor_the_pack_renders(checked: dict[str, tuple[Verdict, dict[str, Any]]]) -> None:
    verdicts = pack_verdicts(checked, "monitor")
    assert len(verdicts) >= 10, "the pack rendered fewer monitors than it has rules"
    refused = [v.summary() for v in verdicts if not v.ok]
    assert not refused, f"{len(refused)} of {len(verdicts)} monitors refused by Alerting's models:\n" + "\n".join(refused)


def test_notifications_accepts_every_channel_the_pack_renders(
        checked: dict[str, tuple[Verdict, dict[str, Any]]]) -> None:
    verdicts = pack_verdicts(checked, "notification_channel")
    assert len(verdicts) == len(CHANNELS)
    refused = [v.summary() for v in verdicts if not v.ok]
    assert not refused, f"{len(refused)} of {len(verdicts)} channels refused by Notifications' models:\n" + "\n".join(refused)


def test_the_plugins_keep_every_field_the_pack_sends(checked: dict[str, tuple[Verdict, dict[str, Any]]]) -> None:
    """A field the models parse past without keeping is a setting the pack believes it made."""
    dropped = {label: fields for label, (v, body) in checked.items()
               if label.startswith(PACK) and (fields := dropped_fields(v, body))}
    assert not dropped, f"fields the plugins ignore: {dropped}"


def test_doc_level_monitor_on_the_event_data_stream_is_refused(
        checked: dict[str, tuple[Verdict, dict[str, Any]]]) -> None:
    verdict = case(checked, "doc-level on the event data stream")
    assert not verdict.ok
    assert (verdict.stage, verdict.status) == ("validate", 400)
    assert "Index patterns are not supported for doc level monitors" in verdict.error


def test_the_same_doc_level_monitor_on_a_name_without_dots_is_accepted(
        checked: dict[str, tuple[Verdict, dict[str, Any]]]) -> None:
    """The control: the refusal above is about the '.' in the index name, not the monitor."""
    verdict = case(checked, "doc-level on a plain index name")
    assert verdict.ok, verdict.summary()


def test_bucket_trigger_without_buckets_path_is_refused(checked: dict[str, tuple[Verdict, dict[str, Any]]]) -> None:
    verdict = case(checked, "bucket trigger without buckets_path")
    assert not verdict.ok
    assert verdict.stage == "parse"
    assert "Missing required field [buckets_path]" in verdict.error


def test_trigger_of_another_monitor_type_is_refused(checked: dict[str, tuple[Verdict, dict[str, Any]]]) -> None:
    verdict = case(checked, "query-level trigger on a bucket monitor")
    assert not verdict.ok
    assert (verdict.stage, verdict.status) == ("parse", 400)
    assert "Incompatible trigger" in verdict.error and "bucket_level_monitor" in verdict.error


def test_a_field_the_plugin_ignores_is_reported(checked: dict[str, tuple[Verdict, dict[str, Any]]]) -> None:
    verdict, body = checked[f"{CASE}monitor with a misplaced field"]
    assert verdict.ok, verdict.summary()
    assert dropped_fields(verdict, body) == ["/severity"]


def test_channel_of_unknown_config_type_is_refused(checked: dict[str, tuple[Verdict, dict[str, Any]]]) -> None:
    """Notifications has no config_type smtp: it parses as NONE and the create action refuses it."""
    verdict = case(checked, "channel of config_type smtp")
    assert not verdict.ok
    assert (verdict.stage, verdict.status) == ("transport", 406)
    assert verdict.error == "NotificationConfig with type NONE is not acceptable"
    assert case(checked, "channel of config_type email").ok
