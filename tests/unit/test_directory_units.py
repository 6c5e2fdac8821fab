"""The directory job's pure parts: the CSV export format and the merge of sources."""

from __future__ import annotations

import pytest
from pacsguard.core.errors import PacsguardError
from pacsguard.jobs.directory import Account, merge, parse_csv


def test_csv_rows_become_accounts() -> None:
    (ada, bob) = parse_csv("username,email,roles,enabled,created\n"
                           "ada,ada@h.example,pacs-admin; radiologist,true,2026-01-05T09:00:00+01:00\n"
                           "bob,,,false,\n")
    assert (ada.name, ada.email, ada.roles, ada.enabled, ada.created) == (
        "ada", "ada@h.example", {"pacs-admin", "radiologist"}, True, "2026-01-05T08:00:00Z")
    assert (bob.email, bob.roles, bob.enabled, bob.created) == (None, set(), False, None)


@pytest.mark.parametrize(("text", "message"), [
    ("user,email\nada,x\n", "missing: username, roles, enabled, created"),
    ("username,email,roles,enabled,created\n,x,,true,\n", "export.csv line 2: username is empty"),
    ("username,email,roles,enabled,created\nada,,,maybe,\n", "line 2: enabled must be true or false, got 'maybe'"),
    ("username,email,roles,enabled,created\nada,,,true,yesterday\n", "created must be an ISO 8601 date"),
])
def test_a_bad_csv_names_the_line_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(PacsguardError, match=message):
        parse_csv(text, "export.csv")


def test_the_identity_provider_wins_and_the_csv_adds_roles() -> None:
    idp = [Account("ada", "keycloak", id="u-1", roles={"radiologist"}, enabled=False, realm="pacs")]
    csv = [Account("ada", "csv", email="ada@h.example", roles={"pacs-admin"}), Account("cy", "csv")]
    out = merge(idp, csv)
    ada = out["ada"]
    assert (ada.source, ada.id, ada.enabled, ada.email, ada.roles) == (
        "keycloak+csv", "u-1", False, "ada@h.example", {"radiologist", "pacs-admin"})
    assert sorted(out) == ["ada", "cy"]


def test_an_optional_id_column_names_the_account_id() -> None:
    (ada,) = parse_csv("username,email,roles,enabled,created,id\nada,,admin,true,,e18a7ec9\n")
    assert ada.id == "e18a7ec9"
