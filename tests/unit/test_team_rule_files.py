"""Rules a team owns, without a cluster: custom rules beside the pack's, filters on any field of the
schema with path:line errors, per-rule overrides, CI output (GitHub annotations, JUnit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from junitparser import JUnitXml
from pacsguard.cli import app
from pacsguard.core.settings import load_settings
from pacsguard.rules.catalog import all_rules, override_lines
from pacsguard.rules.compiler import compile_rules, message_template
from pacsguard.rules.model import RuleError, load_rule_sets
from pacsguard.rules.report import github, problems_of
from pacsguard.services.rulecheck import render, validate
from pacsguard.services.scenarios import CaseResult, RunReport, junit_report
from teamrules import RULE, SIGMA_IN, SIGNAL, team_folder
from typer.testing import CliRunner


def _settings(folder: Path | None = None, **extra: object):
    return load_settings(environ={}, overrides={"rules": {"folders": [{"path": str(folder)}] if folder else [],
                                                          **extra}})


def test_a_custom_rule_compiles_beside_the_pack(tmp_path: Path) -> None:
    settings = _settings(team_folder(tmp_path))
    compiled = {c.signal: c for c in compile_rules(settings)}
    assert len(compiled) == 11 and compiled[SIGNAL].rule.custom
    assert compiled[SIGNAL].object_id == f"{settings.scope}-rule-{SIGNAL}"
    body = json.dumps(compiled[SIGNAL].monitor)
    assert '"field": "observer.hostname"' in body and "observer.hostname:ws-*" in body


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    folder = team_folder(tmp_path)
    path = folder / "impact_study_delete_on_workstation.yml"
    path.write_text(RULE.replace(old, new))
    return path


@pytest.mark.parametrize(("old", "new", "line", "says"), [
    ("entity: observer.hostname", "entity: observer.host", 25, "is not a field of the event schema"),
    ("query: 'observer.hostname:ws-*", "query: 'observer.hostnam:ws-*", 28, "'observer.hostnam' is not a field"),
    ("entity: observer.hostname", "entity: event.original", 25, "is not indexed"),
    ("entity: observer.hostname", "entity: \"@timestamp\"", 25, "is a date field"),
    ("signal: team-ws-deletes", "signal: 4a", 3, "never a pack signal"),
])
def test_bad_custom_rules_name_path_and_line(tmp_path: Path, old: str, new: str, line: int, says: str) -> None:
    path = _broken(tmp_path, old, new)
    v = validate(_settings(path.parent))
    assert not v.ok
    assert any(p.file == str(path) and p.line == line and says in p.message for p in v.problems), v.problems


def test_a_custom_rule_may_not_reuse_a_pack_id(tmp_path: Path) -> None:
    path = _broken(tmp_path, "id: 3f0c8a52-7d61-4c1e-9a0b-6f5e2d4c1b90", "id: bc17517c-ec43-5b5e-b23d-625ee1b127c2")
    with pytest.raises(RuleError, match=r"impact_study_delete_on_workstation.yml:1: id bc17517c.* is already used by "
                                        r".*exfiltration_bulk_export.yml \(a pack rule\)"):
        load_rule_sets([(Path("detections"), False), (path.parent, True)])


def test_overrides_tune_one_rule_and_show_in_plan_lines() -> None:
    settings = _settings(overrides={"1a": {"severity": "critical", "schedule": "5m", "enabled": False,
                                           "owner": "Identity team", "thresholds": {"login_failures_per_user": 3}}})
    rules = {r.signal: r for r in all_rules(settings)}
    assert (rules["1a"].severity, rules["1a"].schedule, rules["1a"].enabled, rules["1a"].risk_score) == \
        ("critical", "5m", False, 90)
    monitors = {c.signal: c.monitor for c in compile_rules(settings)}
    assert "params.value >= 3" in monitors["1a"]["triggers"][0]["bucket_level_trigger"]["condition"]["script"]["source"]
    assert "params.value >= 20" in monitors["1b"]["triggers"][0]["bucket_level_trigger"]["condition"]["script"]["source"]
    assert settings.thresholds.login_failures_per_user == 8  # the shared default stays
    assert "Owner: Identity team" in message_template(rules["1a"], settings)
    assert "Owner: Identity team" not in message_template(rules["1b"], settings)
    assert override_lines(settings) == [("rule 1a: enabled=False, severity=critical, schedule=5m, owner=Identity team, "
                                         "thresholds.login_failures_per_user=3")]


def test_an_override_of_no_rule_is_refused() -> None:
    with pytest.raises(RuleError, match="rules.overrides names no rule: 9z"):
        all_rules(_settings(overrides={"9z": {"enabled": False}}))


def test_github_annotations_name_file_and_line(tmp_path: Path) -> None:
    path = _broken(tmp_path, "entity: observer.hostname", "entity: observer.host")
    result = CliRunner().invoke(app, ["rules", "validate", str(path.parent), "--format", "github"])
    assert result.exit_code == 1
    assert f"::error file={path},line=25::detection.entity: entity 'observer.host' is not a field" in result.stdout


def test_validate_junit_counts_every_file(tmp_path: Path) -> None:
    path = _broken(tmp_path, "entity: observer.hostname", "entity: observer.host")
    out = tmp_path / "validate.xml"
    result = CliRunner().invoke(app, ["rules", "validate", str(path.parent), "--format", "junit"])
    out.write_text(result.stdout)
    xml = JUnitXml.fromfile(str(out))
    cases = [c for suite in xml for c in suite]
    assert len(cases) == 10 + 1 + 1 + 1  # pack rules, pack lock, the team's rule and lock
    failed = [c for c in cases if not c.is_passed]
    assert [c.name for c in failed] == ["impact_study_delete_on_workstation.yml"]


def test_test_rules_junit_has_one_case_per_scenario(tmp_path: Path) -> None:
    report = RunReport([CaseResult("1a", "eight fire", {"alice"}, {"alice"}, set(), set(), "core-search", "1a.yaml"),
                        CaseResult("1a", "seven do not", set(), {"bob"}, set(), set(), "core-search", "1a.yaml")],
                       {"1a": 12.0})
    out = tmp_path / "t.xml"
    out.write_text(junit_report(report))
    xml = JUnitXml.fromfile(str(out))
    cases = [c for suite in xml for c in suite]
    assert [(c.name, c.is_passed) for c in cases] == [("eight fire", True), ("seven do not", False)]
    assert cases[1].result[0].message == "expected [], fired ['bob']"


def test_problem_lines_round_trip() -> None:
    problems = problems_of("a/b.yml:7: detection.entity: bad, really: yes\nno place here")
    assert [(p.file, p.line) for p in problems] == [("a/b.yml", 7), ("-", 1)]
    assert github(problems).splitlines()[0] == "::error file=a/b.yml,line=7::detection.entity: bad, really: yes"


def test_text_format_lists_problems(tmp_path: Path) -> None:
    path = _broken(tmp_path, "entity: observer.hostname", "entity: observer.host")
    assert render(validate(_settings(path.parent)), "text").startswith(f"{path}:25: detection.entity:")




def test_every_exported_sigma_rule_parses_with_pysigma(tmp_path: Path) -> None:
    import yaml
    from sigma.backends.opensearch import OpensearchLuceneBackend
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule

    result = CliRunner().invoke(app, ["--json", "rules", "export", "--format", "sigma", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(data["written"]) == [f"pacsguard_{s}.yml" for s in ("1a", "1b", "3", "4a", "5a")]
    assert sorted(data["not_exported"]) == ["1c", "2a", "2b", "4b", "5b"]
    assert "per-user baseline" in data["not_exported"]["4b"]
    kinds = {}
    for name in data["written"]:
        text = (tmp_path / name).read_text()
        collection = SigmaCollection.from_yaml(text)
        collection.resolve_rule_references()
        kinds[name] = sorted(r.type.name.lower() for r in collection.rules if isinstance(r, SigmaCorrelationRule))
        base = next(d for d in yaml.safe_load_all(text) if "detection" in d)
        base.pop("generate", None)  # the backend converts base rules (a generate: false one only feeds its correlation)
        query = OpensearchLuceneBackend().convert(SigmaCollection.from_dicts([base]))
        assert len(query) == 1 and "event.action:" in query[0]
    assert kinds == {"pacsguard_1a.yml": ["event_count"], "pacsguard_1b.yml": ["event_count"], "pacsguard_3.yml": [],
                     "pacsguard_4a.yml": ["value_count"], "pacsguard_5a.yml": ["event_count"]}


def test_a_sigma_rule_imports_as_a_valid_custom_rule(tmp_path: Path) -> None:
    from pacsguard.rules.model import load_rule
    from sigma.collection import SigmaCollection

    SigmaCollection.from_yaml(SIGMA_IN)  # the input is itself valid Sigma
    src = tmp_path / "svc_delete.yml"
    src.write_text(SIGMA_IN)
    result = CliRunner().invoke(app, ["rules", "import", str(src), "--signal", "sigma-svc-delete",
                                      "--out", str(tmp_path / "team")])
    assert result.exit_code == 0, result.output
    rule = load_rule(tmp_path / "team" / "imported_sigma_svc_delete.yml")
    f = rule.detection.filter
    assert (rule.detection.type, f.actions, f.where, f.where_not, rule.severity) == (
        "event", ["study-delete"], {"user.roles": "service-account"}, {"observer.hostname": "test-pacs"}, "high")


def test_a_sigma_correlation_is_refused_with_the_reason(tmp_path: Path) -> None:
    src = tmp_path / "corr.yml"
    src.write_text(SIGMA_IN + "---\ntitle: c\ncorrelation: {type: event_count, rules: [x], timespan: 5m, "
                              "condition: {gte: 3}}\n")
    result = CliRunner().invoke(app, ["rules", "import", str(src), "--signal", "x-y", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "a correlation rule is not imported" in result.output
