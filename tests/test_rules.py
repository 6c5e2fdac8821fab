"""Detection rules: the corpus validates, broken files are named with file:line, and every
rule's positive and negative scenarios pass on the real node."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from pacsguard.cli import app
from pacsguard.core.connection import Cluster
from pacsguard.core.content import content_path, content_root
from pacsguard.rules.compiler import monitor_objects, render_monitor
from pacsguard.rules.model import RuleError, load_rule, load_rules
from pacsguard.services.scenarios import RunReport, load_scenarios, run_scenarios
from pacsguard.core.settings import Settings, load_settings
from typer.testing import CliRunner

SIGNALS = {"1a", "1b", "1c", "2a", "2b", "3", "4a", "4b", "5a", "5b"}
CASES = [(path.name, i, case.name) for path, f in load_scenarios(content_path("detections", "scenarios"))
         for i, case in enumerate(f.cases)]


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
    assert cond == "params.value >= 12"
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


# ------------------------------------------------------------ scenarios (real node)


@pytest.fixture(scope="module")
def scenario_report(cluster_url: str) -> RunReport:
    settings = load_settings(overrides={"cluster": {"url": cluster_url}, "id_prefix": "pgrules",
                                        "pseudonymization": {"salt": "rules-salt-0123456789abcdef"}}, environ={})
    return run_scenarios(Cluster.connect(settings.cluster), settings)


@pytest.mark.cluster
@pytest.mark.parametrize(("file", "index", "case"), CASES, ids=[f"{f}:{c}" for f, _, c in CASES])
def test_scenario(scenario_report: RunReport, file: str, index: int, case: str) -> None:
    result = next(r for r in scenario_report.results if r.source == file and r.case == case)
    assert result.fired == result.expected, f"{file}: {case}: fired {result.fired}, expected {result.expected}"
    assert result.escalated == result.expected_escalated


@pytest.mark.cluster
def test_every_rule_has_a_positive_and_a_negative_scenario(scenario_report: RunReport) -> None:
    by_signal: dict[str, dict[str, Any]] = {}
    for r in scenario_report.results:
        seen = by_signal.setdefault(r.signal, {"pos": False, "neg": False})
        seen["pos" if r.expected else "neg"] = True
    assert set(by_signal) == SIGNALS
    assert all(v["pos"] and v["neg"] for v in by_signal.values()), by_signal


@pytest.mark.cluster
def test_tuned_threshold_moves_the_boundary(cluster_url: str) -> None:
    """A team that raises 1a to 9 sees the eight-failure case stop firing: test-rules shows it."""
    tuned: Settings = load_settings(overrides={
        "cluster": {"url": cluster_url}, "id_prefix": "pgtune",
        "pseudonymization": {"salt": "tune-salt-0123456789abcdef"},
        "thresholds": {"login_failures_per_user": 9}}, environ={})
    report = run_scenarios(Cluster.connect(tuned.cluster), tuned, only={"1a"})
    eight = next(r for r in report.results if r.case.startswith("eight failures in ten minutes"))
    assert eight.fired == set() and not eight.passed


@pytest.mark.cluster
def test_cli_test_rules(cluster_url: str) -> None:
    result = CliRunner().invoke(app, ["--url", cluster_url, "test-rules", "--signal", "1b", "--signal", "3"])
    assert result.exit_code == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("6 passed, 0 failed (engine: ")


def test_content_root_has_the_rules() -> None:
    rules = load_rules(content_root() / "detections")
    assert {r.signal for r in rules} == SIGNALS
    assert all(r.path is not None and r.path.parent == content_root() / "detections" for r in rules)


def test_alerting_dry_run_buckets_are_read_as_entities() -> None:
    """An _execute response as Alerting 2.19 returns it (common-utils AggregationResultBucket in
    agg_result_buckets, doc-level triggeredDocs as "<docId>|<index>") read by the production parser."""
    from pacsguard.engines.alerting import parse_execute_response

    monitor = {"triggers": [{"bucket_level_trigger": {"id": "t1", "name": "burst", "severity": "2"}},
                            {"document_level_trigger": {"id": "t2", "name": "docs", "severity": "1"}}]}
    response = {"monitor_name": "x", "input_results": {"results": [{}], "error": None}, "trigger_results": {
        "t1": {"name": "burst", "error": None, "agg_result_buckets": {
            "alice": {"agg_alert_content": {"parent_bucket_path": "by_entity", "bucket_keys": ["alice"],
                                            "bucket": {"doc_count": 9, "key": {"entity": "alice"}}}},
            "bob,GB": {"agg_alert_content": {"parent_bucket_path": "by_entity", "bucket_keys": ["bob", "GB"],
                                             "bucket": {"doc_count": 3}}}}},
        "t2": {"name": "docs", "error": None, "triggeredDocs": ["doc-1|logs-pacs.audit-default"]}}}
    run = parse_execute_response(monitor, response, 1.0)
    by_name = {t.name: t for t in run.triggers}
    assert by_name["burst"].entities == ["alice", "bob,GB"] and by_name["burst"].severity == "2"
    assert by_name["burst"].buckets[0].values == {"doc_count": 9}
    assert by_name["docs"].entities == ["doc-1"] and run.fired("1") == {"doc-1"}


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
