"""One engine per rule: Alerting where it runs (auto), the pacsguard engine elsewhere, never both."""

from __future__ import annotations

from pacsguard.core.settings import load_settings
from pacsguard.services.install import alerting_signals
from pacsguard.services.watch import pacsguard_rules

ALL = {"1a", "1b", "1c", "2a", "2b", "3", "4a", "4b", "5a", "5b"}
ALERTING = {"opensearch-alerting", "opensearch-notifications"}


def signals(mode: str, plugins: set[str], rules: dict[str, str] | None = None) -> tuple[set[str], set[str]]:
    settings = load_settings(environ={}, overrides={"engine": {"mode": mode, "rules": rules or {}}})
    return alerting_signals(settings, plugins), {c.signal for c in pacsguard_rules(settings, plugins)}


def test_auto_picks_alerting_where_it_runs_and_pacsguard_elsewhere() -> None:
    assert signals("auto", ALERTING) == (ALL, set())
    assert signals("auto", set()) == (set(), ALL)


def test_a_per_signal_override_moves_only_that_rule() -> None:
    on_alerting, on_watch = signals("auto", ALERTING, {"3": "pacsguard"})
    assert on_watch == {"3"} and on_alerting == ALL - {"3"}


def test_no_rule_runs_on_both_engines() -> None:
    for mode in ("auto", "alerting", "pacsguard"):
        for plugins in (ALERTING, set()):
            on_alerting, on_watch = signals(mode, plugins)
            assert not on_alerting & on_watch and on_alerting | on_watch == ALL
