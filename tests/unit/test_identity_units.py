"""Account keys (docs/identity.md) and how an alert names the accounts of its entity, without a node."""

from __future__ import annotations

import pytest
from pacsguard.core.identity import identity_key
from pacsguard.core.settings import Identity, load_settings
from pacsguard.jobs.directory import Named
from pacsguard.services.watch import with_names


@pytest.mark.parametrize(("value", "how", "key"), [
    ("Alice", Identity(case="insensitive"), "alice"),
    ("Alice", Identity(), "Alice"),                                   # DICOM audit: as the archive writes it
    ("\u00a0 bob\u2003\t", Identity(), "bob"),                        # no-break and em spaces trimmed
    ("Jose\u0301", Identity(), "Jos\u00e9"),                          # NFC: one spelling of é
    ("\uff41\uff44\uff41", Identity(), "\uff41\uff44\uff41"),         # full-width letters stay under NFC ...
    ("\uff41\uff44\uff41", Identity(unicode="NFKC"), "ada"),          # ... and fold under NFKC
    ("NORTH\\Ada", Identity(domain="strip", case="insensitive"), "ada"),
    ("ada@north.example", Identity(domain="strip"), "ada"),
    ("ada@north.example", Identity(), "ada@north.example"),
    (" x ", Identity(trim=False), " x "),
])
def test_identity_key(value: str, how: Identity, key: str) -> None:
    assert identity_key(value, how) == key


def test_default_identities_match_the_sources() -> None:
    s = load_settings(environ={}).sources
    assert s.keycloak.identity.case == "insensitive"
    assert {s.atna.identity.case, s.fhir.identity.case, s.orthanc.identity.case, s.generic.identity.case} == {
        "sensitive"}
    assert identity_key(" Bob@Clinic.Example ", s.addresses) == "bob@clinic.example"


def test_addresses_keep_their_domain() -> None:
    with pytest.raises(Exception, match="sources.addresses.domain must be keep"):
        load_settings(overrides={"sources": {"addresses": {"domain": "strip"}}}, environ={})


def test_named_text_says_what_the_directory_knows() -> None:
    assert Named("e18a", "ada", "e18a").text() == "ada (id e18a)"
    assert Named("ada", "ada").text() == "ada"
    assert Named("e18a", None, "e18a").text() == "e18a (an id the directory does not know)"
    assert Named("zoe").text() == "zoe (not in the directory)"


def test_names_follow_the_entity_line() -> None:
    text = "[pacsguard] HIGH: x\nRule: x\nEntity (user.name|event.action|user.target.name): a|role-grant|b\nWindow: 5m"
    out = with_names(text, {"user.name": "ada (id a)", "user.target.name": "nick (id b)"})
    assert out.split("\n")[3:6] == ["Actor (user.name): ada (id a)", "Target (user.target.name): nick (id b)",
                                    "Window: 5m"]
    assert with_names(text, {}) == text
