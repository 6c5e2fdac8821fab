"""Every rule's positive and negative scenarios on the real node, and a tuned threshold moving the boundary."""

from __future__ import annotations

from typing import Any

import pytest
from pacsguard.cli import app
from pacsguard.core.connection import Cluster
from pacsguard.core.content import content_path
from pacsguard.core.settings import Settings, load_settings
from pacsguard.services.scenarios import RunReport, load_scenarios, run_scenarios
from typer.testing import CliRunner

SIGNALS = {"1a", "1b", "1c", "2a", "2b", "3", "4a", "4b", "5a", "5b"}
CASES = [(path.name, i, case.name) for path, f in load_scenarios(content_path("detections", "scenarios"))
         for i, case in enumerate(f.cases)]



@pytest.fixture(scope="module")
def scenario_report(cluster_url: str) -> RunReport:
    settings = load_settings(overrides={"cluster": {"url": cluster_url}, "id_prefix": "pgrules",
                                        "pseudonymization": {"salt": "rules-salt-0123456789abcdef"}}, environ={})
    return run_scenarios(Cluster.connect(settings.cluster), settings)


@pytest.mark.parametrize(("file", "index", "case"), CASES, ids=[f"{f}:{c}" for f, _, c in CASES])
def test_scenario(scenario_report: RunReport, file: str, index: int, case: str) -> None:
    result = next(r for r in scenario_report.results if r.source == file and r.case == case)
    assert result.fired == result.expected, f"{file}: {case}: fired {result.fired}, expected {result.expected}"
    assert result.escalated == result.expected_escalated


def test_every_rule_has_a_positive_and_a_negative_scenario(scenario_report: RunReport) -> None:
    by_signal: dict[str, dict[str, Any]] = {}
    for r in scenario_report.results:
        seen = by_signal.setdefault(r.signal, {"pos": False, "neg": False})
        seen["pos" if r.expected else "neg"] = True
    assert set(by_signal) == SIGNALS
    assert all(v["pos"] and v["neg"] for v in by_signal.values()), by_signal


def test_tuned_threshold_moves_the_boundary(cluster_url: str) -> None:
    """A team that raises 1a to 9 sees the eight-failure case stop firing: test-rules shows it."""
    tuned: Settings = load_settings(overrides={
        "cluster": {"url": cluster_url}, "id_prefix": "pgtune",
        "pseudonymization": {"salt": "tune-salt-0123456789abcdef"},
        "thresholds": {"login_failures_per_user": 9}}, environ={})
    report = run_scenarios(Cluster.connect(tuned.cluster), tuned, only={"1a"})
    eight = next(r for r in report.results if r.case.startswith("eight failures in ten minutes"))
    assert eight.fired == set() and not eight.passed


def test_cli_test_rules(cluster_url: str) -> None:
    result = CliRunner().invoke(app, ["--url", cluster_url, "test-rules", "--signal", "1b", "--signal", "3"])
    assert result.exit_code == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("6 passed, 0 failed (engine: ")


