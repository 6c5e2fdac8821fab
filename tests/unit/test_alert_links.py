"""Alert messages carry Discover and User investigation links when routing.dashboards_url is set."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from pacsguard.core.content import content_path
from pacsguard.core.settings import load_settings
from pacsguard.engines.core import render_mustache
from pacsguard.rules.compiler import message_template
from pacsguard.rules.model import load_rules

BASE = "https://dashboards.hospital.example"
RULES = {r.signal: r for r in load_rules(content_path("detections"))}


def render(signal: str, entity: str, url: str | None = BASE) -> str:
    settings = load_settings(overrides={"routing": {"dashboards_url": url}}, environ={})
    template = message_template(RULES[signal], settings)
    return render_mustache(template, {"ctx": {"periodEnd": "2026-12-01T10:00:00.000Z",
                                              "newAlerts": [{"bucket_keys": entity, "count": 16}]}})


def test_no_link_without_a_dashboards_url() -> None:
    text = render("4a", "pat", url=None)
    assert "http" not in text and "Discover" not in text


@pytest.mark.parametrize("signal", sorted(RULES))
def test_links_only_add_lines(signal: str) -> None:
    """Every line of the message without links is still there, in order, with links."""
    plain = render(signal, "pat", url=None).splitlines()
    linked = render(signal, "pat").splitlines()
    assert [line for line in linked if not line.startswith(("Discover", "User investigation"))] == plain
    assert any(line.startswith("Discover") and BASE in line for line in linked)


def test_user_rule_links_open_discover_and_the_investigation_dashboard_on_the_entity_and_window() -> None:
    lines = render("4a", "s4a-pat").splitlines()
    discover = next(line for line in lines if line.startswith("Discover (s4a-pat): "))
    url = discover.split(": ", 1)[1]
    assert url.startswith(f"{BASE}/app/data-explorer/discover#?")
    assert " " not in url and '"' not in url
    decoded = unquote(url)
    assert "indexPattern:'pacsguard-default-ip-events'" in decoded
    assert "time:(from:'2026-12-01T10:00:00.000Z||-30m',to:'2026-12-01T10:00:00.000Z||+5m')" in decoded
    assert 'user.name:"s4a-pat"' in decoded and '"study-export"' in decoded
    investigation = next(line for line in lines if line.startswith("User investigation (s4a-pat): "))
    decoded = unquote(investigation.split(": ", 1)[1])
    assert decoded.startswith(f"{BASE}/app/dashboards#/view/pacsguard-default-dash-user-investigation?")
    assert "query:(language:lucene,query:'related.user:\"s4a-pat\"')" in decoded


def test_ip_rule_links_discover_only_and_group_by_rule_links_the_rule_events() -> None:
    lines = render("1b", "81.2.69.142").splitlines()
    assert 'source.ip:"81.2.69.142"' in unquote(next(ln for ln in lines if ln.startswith("Discover")))
    assert not any(ln.startswith("User investigation") for ln in lines)
    lines = render("3", "ann,role-grant,joe").splitlines()
    discover = unquote(next(ln for ln in lines if ln.startswith("Discover")))
    assert '"role-grant"' in discover and "ann" not in discover
