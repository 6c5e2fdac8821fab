"""The eight checklist questions (services/checklist.py) on facts made here: a PASS and a FAIL
(and UNKNOWN where data is missing) for each, so each verdict is pinned to the data behind it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from pacsguard.core.settings import Settings, load_settings
from pacsguard.services.checklist import (
    QUESTIONS,
    AlertFacts,
    Answer,
    DirectoryFacts,
    Facts,
    LoginFacts,
    RoleFacts,
    RuleFacts,
    alerts_admin,
    alerts_export,
    alerts_logins,
    encryption,
    least_privilege,
    mfa,
    response_owner,
    unique_logins,
)

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)
SIGNALS = ("1a", "1b", "1c", "2a", "2b", "3", "4a", "4b", "5a", "5b")


def settings(**overrides: Any) -> Settings:
    return load_settings(overrides=overrides, environ={})


def good_rule(signal: str) -> RuleFacts:
    return RuleFacts(signal, f"rule {signal}", True, "pacsguard", True, True, NOW.isoformat(), None, ["soc"],
                     "PACS on-call")


def good_facts() -> Facts:
    return Facts(
        window="30d", now=NOW,
        logins=LoginFacts(events=40, accounts={"alice@h.org": (1, 2), "bob": (1, 1)}),
        roles=RoleFacts(accounts={f"u{i}" for i in range(10)}, admins={"u0"}),
        directory=DirectoryFacts(source="Keycloak test", mfa={"u0": True}),
        rules={s: good_rule(s) for s in SIGNALS},
        alerts=[AlertFacts("pg-1", "1a", "COMPLETED", NOW - dt.timedelta(hours=2),
                           NOW - dt.timedelta(hours=2) + dt.timedelta(minutes=4))],
        pack_installed=True)


def https() -> Settings:
    return settings(cluster={"url": "https://os.hospital.org:9200"})


def check(question: Callable[[Facts, Settings], Answer], facts: Facts, s: Settings, status: str,
          *evidence: str) -> Answer:
    answer = question(facts, s)
    assert answer.status == status, answer
    text = "\n".join(answer.evidence)
    for part in evidence:
        assert part in text, text
    assert answer.looked_at
    return answer


def test_eight_questions() -> None:
    assert len(QUESTIONS) == 8
    answers = [q(good_facts(), https()) for q in QUESTIONS]
    assert len({a.key for a in answers}) == 8
    assert [a.status for a in answers] == ["PASS"] * 8, [a for a in answers if a.status != "PASS"]


def test_unique_logins() -> None:
    s = settings(checklist={"shared_account_names": ["admin", "radiology"]})
    check(unique_logins, good_facts(), s, "PASS", "2 account(s), none generic")
    facts = good_facts()
    facts.logins.accounts["radiology@h.org"] = (1, 1)
    facts.logins.accounts["carol"] = (2, 1)
    facts.logins.accounts["dave"] = (1, 4)
    check(unique_logins, facts, s, "FAIL", "radiology@h.org: a generic account name",
          "carol: 2 countries within one hour", "dave: 4 devices within one hour")
    facts.logins = LoginFacts()
    check(unique_logins, facts, s, "UNKNOWN", "no successful logins")


def test_least_privilege() -> None:
    check(least_privilege, good_facts(), https(), "PASS", "1 of 10 account(s) hold an admin role (10%")
    facts = good_facts()
    facts.roles.admins = {"u0", "u1", "u2"}
    check(least_privilege, facts, https(), "FAIL", "3 of 10", "u0, u1, u2")
    facts.roles = RoleFacts()
    check(least_privilege, facts, https(), "UNKNOWN", "no user directory and no event carries user.roles")
    facts.roles = RoleFacts({"a", "b", "c", "d", "e"}, {"a"}, source="directory")
    answer = check(least_privilege, facts, https(), "PASS", "1 of 5 account(s)")
    assert answer.looked_at[0].startswith("enabled accounts in the user directory")


def test_mfa() -> None:
    check(mfa, good_facts(), https(), "PASS", "every admin account (1) has a second factor")
    facts = good_facts()
    facts.directory.mfa["u0"] = False
    check(mfa, facts, https(), "FAIL", "u0: no second factor")
    facts.directory = DirectoryFacts()
    check(mfa, facts, https(), "UNKNOWN", "no identity provider")
    facts = good_facts()
    facts.directory.problems.append("cannot read the identity provider: down")
    check(mfa, facts, https(), "UNKNOWN", "down")


@pytest.mark.parametrize("question,signal", [(alerts_logins, "2b"), (alerts_admin, "3"), (alerts_export, "5a")])
def test_alerting_items(question: Callable[[Facts, Settings], Answer], signal: str) -> None:
    check(question, good_facts(), https(), "PASS", f"{signal} rule {signal}: pacsguard, last run")
    broken: dict[str, tuple[dict[str, Any], str]] = {
        "disabled": ({"enabled": False}, "disabled"),
        "error": ({"error": "search failed"}, "last run failed: search failed"),
        "stopped": ({"running": False}, "not running"),
        "no channel": ({"channels": []}, 'no channel: add one under notifications.channels (README "Alert channels")'),
        "no owner": ({"owner": " "}, "no owner"),
    }
    for change, expected in broken.values():
        facts = good_facts()
        for key, value in change.items():
            setattr(facts.rules[signal], key, value)
        check(question, facts, https(), "FAIL", expected)
    facts = good_facts()
    facts.pack_installed = False
    check(question, facts, https(), "FAIL", "not installed")
    facts = good_facts()
    facts.rules[signal].running = None
    facts.rules[signal].engine = "alerting"
    check(question, facts, https(), "UNKNOWN", "cannot be seen")


def test_encryption() -> None:
    check(encryption, good_facts(), https(), "PASS", "TLS, certificate verified", "at rest: cannot be seen")
    check(encryption, good_facts(), settings(cluster={"url": "http://127.0.0.1:9200"}), "FAIL", "plain HTTP")
    s = settings(cluster={"url": "https://os:9200"}, notifications={"channels": [
        {"name": "mail", "type": "smtp", "host": "smtp", "security": "none", "from_address": "a@b.c",
         "recipients": ["x@y.z"]}]})
    check(encryption, good_facts(), s, "FAIL", "channel mail: SMTP none")
    s = settings(cluster={"url": "https://os:9200", "verify_tls": False})
    check(encryption, good_facts(), s, "FAIL", "TLS without verification")


def test_response_owner() -> None:
    check(response_owner, good_facts(), https(), "PASS", "1 of 1 alert(s) acknowledged; median 4.0 min")
    facts = good_facts()
    facts.alerts.append(AlertFacts("pg-2", "4a", "ACTIVE", NOW - dt.timedelta(hours=1), None))
    facts.alerts.append(AlertFacts("pg-3", "3", "COMPLETED", NOW - dt.timedelta(hours=3),
                                   NOW - dt.timedelta(hours=2)))
    check(response_owner, facts, https(), "FAIL", "pg-2 (4a) never acknowledged (ACTIVE)",
          "pg-3 (3) acknowledged after 60 min")
    check(response_owner, good_facts(), settings(cluster={"url": "https://os:9200"},
                                                 routing={"default_owner": ""}), "FAIL", "has no owner")
    facts = good_facts()
    facts.alerts = [AlertFacts("pg-4", "1a", "ACTIVE", NOW - dt.timedelta(minutes=5), None)]
    check(response_owner, facts, https(), "PASS")  # still within the 15 minutes
