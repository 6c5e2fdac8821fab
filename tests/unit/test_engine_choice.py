"""One engine per rule: Alerting where it runs (auto), the pacsguard engine elsewhere, never both."""

from __future__ import annotations

from pacsguard.core.settings import Settings, load_settings
from pacsguard.rules.compiler import channel_objects, monitor_objects
from pacsguard.services.install import alerting_signals, delivery_warnings
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


def channel_settings(mode: str, channels: list[dict[str, object]], routes: list[dict[str, object]] | None = None,
                     rules: dict[str, str] | None = None) -> Settings:
    return load_settings(environ={"HOOK_SECRET": "0123456789abcdef0123", "SOAR_AUTH": "Bearer t0ken"}, overrides={
        "engine": {"mode": mode, "rules": rules or {}},
        "routing": {"default_owner": "PACS on-call", "routes": routes or []},
        "notifications": {"channels": channels}})


SIGNED = {"name": "soar", "type": "webhook", "url": "https://soar.hospital.test/in", "secret_env": "HOOK_SECRET"}
PLAIN = {"name": "soc", "type": "webhook", "url": "https://soc.hospital.test/in", "headers": {"X-Tenant": "radiology"}}


def test_a_signed_channel_keeps_its_rules_on_the_pack_engine_in_auto_mode_and_says_so() -> None:
    """Notifications cannot sign a body: in auto mode the rules routed to a signed webhook run on
    `watch`, which signs; the others stay on Alerting. plan/install/status say which and why."""
    settings = channel_settings("auto", [SIGNED, PLAIN], routes=[
        {"signals": ["3"], "channels": ["soar"], "owner": "IAM"}, {"channels": ["soc"], "owner": "PACS on-call"}])
    default_route = channel_settings("auto", [SIGNED, PLAIN])
    assert alerting_signals(default_route, ALERTING) == set()  # every rule may go to soar
    assert alerting_signals(settings, ALERTING) == ALL - {"3"}
    assert {c.signal for c in pacsguard_rules(settings, ALERTING)} == {"3"}
    warnings = delivery_warnings(settings, ALERTING)
    assert warnings == [("rules 3 run on the pacsguard engine (`pacsguard watch`), not on Alerting: channel soar "
                        "asks for an HMAC signature of the body (secret_env/secret_file), which Notifications "
                        "cannot do")]
    assert delivery_warnings(settings, set()) == []  # no Alerting: the pack delivers everything


def test_a_signed_channel_on_a_rule_forced_onto_alerting_is_warned_about() -> None:
    settings = channel_settings("alerting", [SIGNED])
    assert alerting_signals(settings, ALERTING) == ALL
    warnings = delivery_warnings(settings, ALERTING)
    assert len(warnings) == len(ALL) and all("channel soar asks for an HMAC signature" in w for w in warnings)
    assert "rule 3 runs on Alerting (engine setting)" in " ".join(warnings)


def test_monitors_without_a_channel_are_said_to_page_nobody() -> None:
    settings = channel_settings("auto", [])
    assert delivery_warnings(settings, ALERTING) == [
        ("no channel (notifications.channels): the 10 monitor(s) on Alerting have no actions and page nobody; "
        "their alerts are seen only in `pacsguard alerts list` and the console")]
    assert all(not t["bucket_level_trigger"]["actions"] for o in monitor_objects(settings)
               for t in o.body["triggers"])


def test_webhook_configs_carry_static_and_env_headers_and_say_the_body_is_text() -> None:
    channel = dict(PLAIN, headers_from_env={"Authorization": "SOAR_AUTH"})
    settings = load_settings(environ={}, overrides={"notifications": {"channels": [channel]}})
    import os

    os.environ["SOAR_AUTH"] = "Bearer t0ken"
    try:
        (config,) = channel_objects(settings)
    finally:
        del os.environ["SOAR_AUTH"]
    assert config.body["config"]["webhook"]["header_params"] == {
        "Content-Type": "text/plain; charset=utf-8", "X-Tenant": "radiology", "Authorization": "Bearer t0ken"}
