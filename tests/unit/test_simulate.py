"""The simulation generator without a cluster: deterministic for a seed, every scenario labelled,
Keycloak lines in the JSON console format."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pacsguard.core.errors import PacsguardError
from pacsguard.services.backtest import load_labels
from pacsguard.services.simulate import SCENARIOS, simulate, write


def test_simulation_is_deterministic_for_a_seed_and_labels_every_scenario(tmp_path: Path) -> None:
    end = dt.datetime(2025, 3, 14, 18, 0, tzinfo=dt.timezone.utc)
    a, b = simulate(3, 20, 5, end), simulate(3, 20, 5, end)
    c = simulate(3, 20, 6, end)
    write(a, tmp_path / "a", 5)
    write(b, tmp_path / "b", 5)
    write(c, tmp_path / "c", 6)
    for name in ("viewer-audit.jsonl", "keycloak.log", "labels.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "viewer-audit.jsonl").read_bytes() != (tmp_path / "c" / "viewer-audit.jsonl").read_bytes()
    assert len(a.labels) >= len(SCENARIOS)
    assert all(t <= end for t, _ in a.generic + a.keycloak)
    # Keycloak lines are what its JSON console handler prints: one JSON record with the event text in message
    record = json.loads((tmp_path / "a" / "keycloak.log").read_text().splitlines()[0])
    assert record["loggerName"] == "org.keycloak.events" and 'type="LOGIN' in record["message"]
    # DICOM exports are ATNA messages in RFC 5424 frames, one a line, that the collector's parser reads whole
    from pacsguard.collector.syslog_input import convert_file_line

    lines = (tmp_path / "a" / "dicom-audit.log").read_bytes().splitlines()
    assert len(lines) == len(a.atna) > 40
    for line in lines:
        converted = convert_file_line(line, 1 << 20)
        assert converted.atna_error is None, converted.atna_error
        doc = json.loads(converted.message)["doc"]
        assert doc["event"]["action"] == "study-export" and doc["pacs"]["study"]["count"] == 1
        assert "partial" not in json.loads(converted.message) and "SIMULATED" not in converted.message
    # the directory export lists every account with its role
    rows = (tmp_path / "a" / "directory.csv").read_text().splitlines()
    assert rows[0] == "username,email,roles,enabled,created" and len(rows) == 21
    assert sum(",pacs-admin," in r for r in rows) == sum(u.role == "adm" for u in a.users) >= 1


def test_too_few_days_for_every_scenario_is_a_clear_error() -> None:
    with pytest.raises(PacsguardError, match="time slots"):
        simulate(2, 20, 1, dt.datetime(2025, 3, 14, 8, 0, tzinfo=dt.timezone.utc))


def test_a_bad_label_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text('{"signal": "1a", "entity": "x", "start": "2025-03-14T07:00:00Z", "end": "2025-03-14T07:05:00Z",'
                    ' "kind": "attack"}\n{"signal": "1a", "entity": "x", "start": "yesterday", "end": "x",'
                    ' "kind": "attack"}\n')
    with pytest.raises(PacsguardError, match=r"labels.jsonl:2: start"):
        load_labels(path)


def test_an_alert_matches_a_label_of_its_signal_and_entity_within_the_label_and_rule_window() -> None:
    from pacsguard.services.backtest import Alert, LabelRow, Report, _match

    t0 = dt.datetime(2025, 3, 14, 7, 0, tzinfo=dt.timezone.utc)
    minutes = dt.timedelta(minutes=1)
    labels = [LabelRow("1a", "ann", t0, t0 + 5 * minutes, "attack"),
              LabelRow("1a", "bob", t0, t0 + 5 * minutes, "near-miss"),
              LabelRow("2a", "cy", t0, t0 + minutes, "benign-unusual"),
              LabelRow("5a", "dee", t0, t0 + minutes, "attack")]
    report = Report(t0, t0 + dt.timedelta(days=1), 300, users=10)
    report.alerts = [Alert("1a", "1a", ("ann",), t0 + 15 * minutes, t0 + 15 * minutes),   # 5m + 10m rule window
                     Alert("1a", "1a", ("bob",), t0 + 5 * minutes, t0 + 5 * minutes),
                     Alert("2a", "2a", ("cy",), t0 + 5 * minutes, t0 + 5 * minutes),
                     Alert("1a", "1a", ("eve",), t0, t0)]
    _match(report, labels, {"1a": 600, "2a": 3600, "5a": 1800}, 300)
    assert [a.matched for a in report.alerts] == ["attack", "near-miss", "benign-unusual", None]
    scores = report.scores()
    assert (scores["attacks"], scores["detected"], scores["recall"]) == (2, 1, 0.5)
    assert scores["false_alerts"] == 2  # the near-miss and the unlabelled one; travel is explained
    assert scores["false_per_1000_user_days"] == 200.0
    assert scores["precision"] == 0.5


def test_backtest_without_a_period_or_labels_says_what_to_give(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pacsguard.cli import app
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["backtest"])
    assert result.exit_code != 0
    assert "give --from and --to" in result.output


def test_simulate_writes_files_without_shipping(tmp_path: Path) -> None:
    from pacsguard.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["simulate", "--days", "3", "--users", "12", "--no-ship", "--out",
                                      str(tmp_path / "sim")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "sim" / "meta.json").read_text())
    assert meta["users"] == 12 and meta["labels"]["attack"] == 13
    assert "pacsguard backtest --labels" in result.output
