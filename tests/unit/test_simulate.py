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
