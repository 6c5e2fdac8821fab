"""Which connector actions contain and reset plan for each kind of alert (services/response/act.py);
planning reads no cluster for these signals, so no node is needed (the actions run in tests/cluster)."""

from __future__ import annotations

from typing import Any

import pytest
from pacsguard.core.settings import Settings, load_settings
from pacsguard.services.response.act import plan_contain, plan_reset
from pacsguard.services.response.context import AlertContext, rule_for


def ctx(signal: str, entity: str = "dr.x", field: str = "user.name") -> AlertContext:
    return AlertContext(f"pg-{signal}", "pacsguard", "ACTIVE", signal, rule_for(signal), entity, field, [entity],
                        "2026-11-30T10:00:00Z", "on-call", {"id": f"pg-{signal}"})


def settings(keycloak: bool = True, **more: Any) -> Settings:
    kc = {"keycloak": {"url": "https://sso.example.org", "realm": "pacs"}} if keycloak else {}
    return load_settings(environ={}, overrides={"connectors": kc, **more})


def planned(items: list[Any]) -> list[tuple[str, str, str]]:
    return [(p.connector, p.action, p.target) for p in items]


@pytest.mark.parametrize("signal", ["1a", "1c", "2a", "2b", "4a", "4b"])
def test_account_signals_lock_the_account(signal: str) -> None:
    plan, by_hand = plan_contain(None, settings(), ctx(signal))  # type: ignore[arg-type]
    assert planned(plan) == [("keycloak", "disable-user", "dr.x"), ("keycloak", "logout-user", "dr.x")]
    assert by_hand == [f"guide: {rule_for(signal).guide.contain}"]
    reset, _ = plan_reset(None, settings(), ctx(signal))  # type: ignore[arg-type]
    assert planned(reset) == [("keycloak", "require-password-update", "dr.x")]


def test_without_a_connector_the_step_is_by_hand() -> None:
    plan, by_hand = plan_contain(None, settings(keycloak=False), ctx("1a"))  # type: ignore[arg-type]
    assert plan == [] and by_hand[0].startswith("disable dr.x and end its sessions in the identity provider")


def test_an_ip_is_blocked_by_hand() -> None:
    plan, by_hand = plan_contain(None, settings(), ctx("1b", "203.0.113.9", "source.ip"))  # type: ignore[arg-type]
    assert plan == [] and by_hand[0].startswith("block 203.0.113.9 (source.ip) at the firewall")


def test_shares_go_to_the_webhook_connectors_of_their_signal() -> None:
    s = settings(notifications={"channels": [{"name": "soar", "type": "webhook", "url": "https://soar/h"}]},
                 connectors={"keycloak": {"url": "https://sso", "realm": "pacs"}, "webhooks": [
                     {"name": "expire", "channel": "soar", "signals": ["5a"], "action": "expire links of {entity}"},
                     {"name": "other", "channel": "soar", "signals": ["4a"], "action": "other {entity}"}]})
    plan, _ = plan_contain(None, s, ctx("5a"))  # type: ignore[arg-type]
    assert planned(plan) == [("webhook:expire", "expire", "dr.x")]  # no Keycloak lock for a share spike
