"""Detection rules without a cluster: the corpus validates and compiles, broken files are named
with file:line, alert messages say what a responder needs, the version lock holds, and
Alerting's dry-run answer is read as the entities that fired. (The scenarios on a real node:
tests/cluster/test_rule_scenarios.py.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from pacsguard.cli import app
from pacsguard.core.content import content_path, content_root
from pacsguard.core.settings import load_settings
from pacsguard.engines.alerting import parse_execute_response
from pacsguard.engines.result import join_keys, split_keys
from pacsguard.rules.compiler import monitor_objects, render_monitor
from pacsguard.rules.model import RuleError, load_rule, load_rules
from typer.testing import CliRunner

SIGNALS = {"1a", "1b", "1c", "2a", "2b", "3", "4a", "4b", "5a", "5b"}


def test_every_signal_has_one_valid_rule_that_compiles() -> None:
    rules = load_rules(content_path("detections"))
    assert {r.signal for r in rules} == SIGNALS
    settings = load_settings(environ={})
    for rule in rules:
        monitor = render_monitor(rule, settings)
        # bucket-level for every rule: Alerting >= 2.19.3 refuses doc-level monitors on a
        # data stream name (a '.' counts as a pattern)
        assert monitor["monitor_type"] == "bucket_level_monitor"
        assert monitor["schedule"] == {"period": {"interval": 1, "unit": "MINUTES"}}
        assert len(monitor["inputs"]) == 1  # Alerting takes one search input
    assert len({o.id for o in monitor_objects(settings)}) == len(rules)


def test_thresholds_come_from_settings() -> None:
    rule = next(r for r in load_rules(content_path("detections")) if r.signal == "1a")
    tuned = load_settings(overrides={"thresholds": {"login_failures_per_user": 12,
                                                    "login_failures_per_user_window": "15m"}}, environ={})
    monitor = render_monitor(rule, tuned)
    cond = monitor["triggers"][0]["bucket_level_trigger"]["condition"]["script"]["source"]
    assert cond == "(params.value >= 12) && params.excepted == 0"  # and no exception in force
    assert "{{period_end}}||-15m" in str(monitor["inputs"])


def test_every_rule_carries_the_response_routine_and_attack_mapping() -> None:
    settings = load_settings(environ={}, overrides={"notifications": {"channels": [
        {"name": "soc", "type": "webhook", "url": "https://soar.example.org/hook"}]}})
    for rule in load_rules(content_path("detections")):
        assert all(getattr(rule.guide, step) for step in ("contain", "preserve", "scope", "reset"))
        assert rule.mitre and rule.false_positives
        for trigger in render_monitor(rule, settings)["triggers"]:
            for action in trigger["bucket_level_trigger"]["actions"]:
                message = action["message_template"]["source"]
                assert rule.name in message and rule.guide.contain in message
                assert "Owner: PACS security on-call" in message and "{{bucket_keys}}" in message


@pytest.mark.parametrize(("mutation", "expected"), [
    (("risk_score: 73", "risk_score: 20"), r"credential_access_login_failures_per_user\.yml:\d+: rule: .*risk_score 20 does not match severity high"),
    (("threshold: login_failures_per_user\n", "threshold: login_failures_per_usr\n"),
     r"\.yml:\d+: detection\.threshold: .*unknown pack threshold 'login_failures_per_usr'"),
    (("severity: high", "severity: urgent"), r"_per_user\.yml:12: severity: Input should be"),
    (("schedule: 1m", "schedule: 30s"), r"schedule: Alerting takes minutes"),
])
def test_broken_rule_names_file_and_line(tmp_path: Path, mutation: tuple[str, str], expected: str) -> None:
    source = content_path("detections", "credential_access_login_failures_per_user.yml")
    broken = tmp_path / source.name
    text = source.read_text()
    assert mutation[0] in text
    broken.write_text(text.replace(mutation[0], mutation[1], 1))
    with pytest.raises(RuleError, match=expected):
        load_rule(broken)


def test_bad_file_name_and_duplicate_ids_are_refused(tmp_path: Path) -> None:
    source = content_path("detections", "credential_access_login_failures_per_user.yml")
    shutil.copy(source, tmp_path / "Brute Force.yml")
    shutil.copy(source, tmp_path / "credential_access_copy.yml")
    shutil.copy(source, tmp_path / "credential_access_other.yml")
    with pytest.raises(RuleError) as err:
        load_rules(tmp_path)
    assert "Brute Force.yml:1: file name must be <tactic>_<what>.yml" in str(err.value)
    assert "credential_access_other.yml:1: id" in str(err.value)


def test_cli_validate_reports_line(tmp_path: Path) -> None:
    source = content_path("detections", "credential_access_login_failures_per_user.yml")
    (tmp_path / source.name).write_text(source.read_text().replace("risk_score: 73", "risk_score: 200"))
    result = CliRunner().invoke(app, ["rules", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / source.name}:" in result.stderr and "risk_score" in result.stderr
    assert "Traceback" not in result.stderr


def test_content_root_has_the_rules() -> None:
    rules = load_rules(content_root() / "detections")
    assert {r.signal for r in rules} == SIGNALS
    assert all(r.path is not None and r.path.parent == content_root() / "detections" for r in rules)


def test_alerting_dry_run_buckets_are_read_as_entities() -> None:
    """An _execute response as Alerting 2.19 returns it (common-utils AggregationResultBucket in
    agg_result_buckets, doc-level triggeredDocs as "<docId>|<index>") read by the production parser.
    Keys are read by name from the bucket's key map, never by the position in bucket_keys, which
    Alerting fills from a hash map (seen on 2.19.6: [event.action, user.target.name, user.name])."""
    monitor = {"triggers": [{"bucket_level_trigger": {"id": "t1", "name": "burst", "severity": "2"}},
                            {"document_level_trigger": {"id": "t2", "name": "docs", "severity": "1"}}]}
    response = {"monitor_name": "x", "input_results": {"results": [{}], "error": None}, "trigger_results": {
        "t1": {"name": "burst", "error": None, "agg_result_buckets": {
            "alice": {"agg_alert_content": {"parent_bucket_path": "by_entity", "bucket_keys": ["alice"],
                                            "bucket": {"doc_count": 9, "key": {"entity": "alice"}}}},
            "kim|role-grant|lee": {"agg_alert_content": {
                "parent_bucket_path": "by_entity", "bucket_keys": ["kim|role-grant|lee"],
                "bucket": {"doc_count": 1, "key": {"entity_keys": "kim|role-grant|lee"}}}},
            "odd": {"agg_alert_content": {
                "parent_bucket_path": "by_entity", "bucket_keys": ["x", "y"],
                "bucket": {"doc_count": 1, "key": {"event_action": "x", "entity": "o\\|dd"}}}}}},
        "t2": {"name": "docs", "error": None, "triggeredDocs": ["doc-1|logs-pacs.audit-default"]}}}
    run = parse_execute_response(monitor, response, 1.0)
    by_name = {t.name: t for t in run.triggers}
    burst = by_name["burst"]
    assert burst.entities == ["alice", "kim|role-grant|lee", "o\\|dd"] and burst.severity == "2"
    assert [b.keys for b in burst.buckets] == [("alice",), ("kim", "role-grant", "lee"), ("o\\|dd",)]
    assert burst.buckets[0].values == {"doc_count": 9}
    assert by_name["docs"].entities == ["doc-1"] and run.fired("1") == {"doc-1"}


def test_a_joined_entity_key_cannot_be_forged_with_the_separator() -> None:
    """A user name holding '|' must not pass for an actor, an action and a target."""
    forged = ("alice|role-grant", "bob", "")
    joined = join_keys(forged)
    assert split_keys(joined) == forged and joined != "alice|role-grant|bob|"
    assert split_keys(join_keys(("a\\", "|", ""))) == ("a\\", "|", "")


@pytest.mark.parametrize(("file", "mutation", "expected"), [
    ("exfiltration_bulk_export.yml", ("    - study-export\n", "    - study-exprot\n"),
     r"exfiltration_bulk_export\.yml:\d+: detection\.filter\.actions: unknown event\.action 'study-exprot'"),
    ("initial_access_login_new_country.yml", ("profile_kind: country", "profile_kind: countyr"),
     r"initial_access_login_new_country\.yml:\d+: detection\.profile_kind: unknown profile kind 'countyr'"),
    ("exfiltration_export_above_baseline.yml", ("baseline_metric: export", "baseline_metric: exprt"),
     r"exfiltration_export_above_baseline\.yml:\d+: detection\.baseline_metric: unknown baseline metric 'exprt'"),
])
def test_validate_rejects_words_outside_the_vocabulary(tmp_path: Path, file: str, mutation: tuple[str, str],
                                                       expected: str) -> None:
    source = content_path("detections", file)
    assert mutation[0] in source.read_text()
    (tmp_path / file).write_text(source.read_text().replace(mutation[0], mutation[1], 1))
    result = CliRunner().invoke(app, ["rules", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert re.search(expected, result.stderr), result.stderr


def test_the_version_lock_holds_and_catches_an_unbumped_change(tmp_path: Path) -> None:
    from pacsguard.rules.lock import lock_problems

    folder = content_path("detections")
    assert lock_problems(load_rules(folder), folder) == []  # every rule as locked
    for path in [*folder.glob("*.yml"), folder / "rules.lock.yaml"]:
        shutil.copy(path, tmp_path / path.name)
    changed = tmp_path / "exfiltration_bulk_export.yml"
    changed.write_text(changed.read_text().replace("threshold: bulk_export_studies", "threshold: share_links"))
    problems = lock_problems(load_rules(tmp_path), tmp_path)
    assert len(problems) == 1 and problems[0].startswith(f"{changed}:1: version: the rule changed since version 1")
    changed.write_text(changed.read_text().replace("version: 1\n", "version: 2\n", 1))
    assert "rules.lock.yaml is behind" in lock_problems(load_rules(tmp_path), tmp_path)[0]


def test_validate_without_a_folder_checks_every_rule_file_of_the_pack() -> None:
    """`pacsguard rules validate` with no argument reads the content the installer uses: one row per
    rule file there, so a rule file the validator skipped would show as a missing row."""
    files = sorted(content_root().joinpath("detections").glob("*.yml"))
    result = CliRunner().invoke(app, ["--json", "rules", "validate"])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rules"]
    assert len(rows) == len(files) == len(SIGNALS)
    assert {r["signal"] for r in rows} == SIGNALS
    assert sorted(r["id"] for r in rows) == sorted(str(load_rule(f).id) for f in files)


MONITOR_1A = {
    "monitor_type": "bucket_level_monitor",
    "triggers": [{"bucket_level_trigger": {"name": "Login-failure burst on one account", "severity": "2",
                                           "condition": {}, "actions": []}}],
}


def bucket(*keys: str, count: int) -> dict[str, Any]:
    """One entry of agg_result_buckets, as Alerting 2.19 writes it (AggregationResultBucket.toXContent)."""
    return {"agg_alert_content": {"parent_bucket_path": "by_entity", "bucket_keys": list(keys),
                                  "bucket": {"key": {"entity": ",".join(keys)}, "doc_count": count}}}


def dry_run_response(trigger_results: dict[str, Any]) -> dict[str, Any]:
    """The body of POST _plugins/_alerting/monitors/_execute?dryrun=true (MonitorRunResult.toXContent)."""
    return {"monitor_name": "pacsguard 1a: Login-failure burst on one account",
            "period_start": "2026-11-27T09:59:00Z", "period_end": "2026-11-27T10:00:00Z", "error": None,
            "input_results": {"results": [{"aggregations": {"by_entity": {"buckets": []}}}], "error": None},
            "trigger_results": trigger_results}


def test_alerting_dry_run_of_an_unsaved_monitor_matches_triggers_by_name() -> None:
    # The plugin gives a monitor body it did not save made-up trigger ids: matched by name.
    response = dry_run_response({"kT3vYpEBq8x0C2fHc1aZ": {
        "name": "Login-failure burst on one account", "error": None,
        "agg_result_buckets": {"alice": bucket("alice", count=9), "bob#GB": bucket("bob", "GB", count=8)},
        "action_results": {}}})
    run = parse_execute_response(MONITOR_1A, response, 1.0)
    [trigger] = run.triggers
    assert (trigger.name, trigger.severity) == ("Login-failure burst on one account", "2")
    assert trigger.entities == ["alice", "bob,GB"]
    assert run.fired("2") == {"alice", "bob,GB"}


def test_alerting_dry_run_without_triggered_buckets_fires_for_nobody() -> None:
    response = dry_run_response({"x": {"name": "Login-failure burst on one account", "error": None,
                                       "agg_result_buckets": {}, "action_results": {}}})
    run = parse_execute_response(MONITOR_1A, response, 1.0)
    assert [t.entities for t in run.triggers] == [[]] and run.fired() == set()
