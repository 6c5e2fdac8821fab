"""The Keycloak pipeline through the router on the real node, beyond the golden files: one
event in many shapes, admin events, bad input (built from our own lines in
pipelines/keycloak/_dev/test/pipeline), and the public corpus.

Every line of every file in ../shared/samples/keycloak is covered by the table
SAMPLE_LINES below (skipped, with the reason, where the corpus is absent). The expected values were written by reading each sample
line (not copied from pipeline output). Each row checks:

* event lines with a full timestamp of their own (kind EV): event.code,
  event.action, event.outcome, event.reason (the Keycloak error, None for a
  success), user.name, user.id, source.ip and @timestamp (UTC), plus the extra
  fields named in the row (user.target.id, client.id, session.id, user.domain,
  user.changes.roles, observer.hostname, ...), and that nothing "null" survives;
* event lines without a full timestamp (kind NEEDS_TS: no timestamp at all, or a
  time of day without a date): sent raw they must land in the failure index with
  an error about the timestamp; sent with the shipper's @timestamp (what Filebeat
  & co. add) they give the same fields as an EV row, @timestamp = the shipper's;
* lines that are not Keycloak events (kind NOT_EVENT: startup messages, stack
  trace lines, other loggers' records): failure index, error.message set,
  event.original kept.

user.name is the user name the event gives (details username) and otherwise the
Keycloak userId; None where the event has neither (e.g. userId=null).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import corpus
import pytest
from documents import get_path, walk_values

KEYCLOAK = corpus.folder("keycloak")
OWN = Path(__file__).resolve().parents[2] / "pipelines" / "keycloak" / "_dev" / "test" / "pipeline"
SHIPPER_TS = "2024-01-22T10:14:06.733Z"

Simulate = Callable[[Any], dict[str, Any]]


class Ev(NamedTuple):
    code: str
    action: str
    outcome: str
    reason: str | None
    name: str | None
    uid: str | None
    ip: str | None
    ts: str | None  # None: the line has no full timestamp (NEEDS_TS)
    extra: Mapping[str, Any] = MappingProxyType({})


NOT_EVENT = "not-event"

# Ids that recur in the samples.
CE637 = "ce637d23-b89c-4fca-9088-1aea1d053e19"
CC744 = "cc74404c-de7e-482a-98f7-b271ff3c49be"
ADMIN_CLIENT = "7bcaf1cb-820a-40f1-91dd-75ced03ef03b"
DD_USER = "15745079-6780-4b93-80d9-c0d3480885d3"
KRAKEN_ADMIN = "46be0a48-6373-4b24-8ea0-7167ae71db2a"


def login_error(reason: str, ip: str, ts: str | None, name: str | None = None, uid: str | None = None,
                **extra: Any) -> Ev:
    return Ev("LOGIN_ERROR", "user-login", "failure", reason, name, uid, ip, ts, extra)


def admin(code: str, action: str, ts: str | None, **extra: Any) -> Ev:
    """elastic test-log admin events: actor ce637d23 from 10.2.2.156 via client 7bcaf1cb."""
    return Ev(code, action, "success", None, CE637, CE637, "10.2.2.156", ts,
              {"event.provider": "keycloak-admin", "client.id": ADMIN_CLIENT, **extra})


# file -> one entry per line (line 1 first).
SAMPLE_LINES: dict[str, list[Ev | str]] = {
    # Keycloak 15 (WildFly) console text, unquoted values; L30 quoted with literal \" escapes.
    "elastic-integrations-test-log.log": [
        *[NOT_EVENT] * 8,  # L1-8 server startup (L3 garbled "WFLYUT002021-10-22 21:")
        login_error("invalid_redirect_uri", "172.18.0.1", "2021-10-22T21:01:45.403Z",
                    **{"client.id": "test", "user.domain": "test"}),  # L9
        login_error("invalid_user_credentials", "172.18.0.1", "2021-10-22T21:20:42.120Z", "admin", CC744),  # L10
        login_error("user_not_found", "172.18.0.1", "2021-10-22T21:24:41.076Z",
                    **{"client.id": "security-admin-console", "user.domain": "master"}),  # L11
        login_error("invalid_redirect_uri", "172.18.0.1", "2021-10-22T21:31:31.555Z"),  # L12
        login_error("invalid_user_credentials", "10.2.2.156", "2021-10-22T20:58:02.700Z", "admin", CE637,
                    **{"user.domain": "ABCD TEST", "client.id": "https://www.example.com/shibboleth"}),  # L13
        Ev("LOGIN", "user-login", "success", None, "admin", CE637, "10.2.2.156", "2021-10-22T22:11:31.257Z",
           {"log.level": "DEBUG", "event.provider": "keycloak"}),  # L14
        Ev("CODE_TO_TOKEN", "other", "success", None, CE637, CE637, "10.2.2.156",
           "2021-10-22T22:11:32.131Z"),  # L15
        admin("CREATE:USER", "user-create", "2021-10-22T22:12:09.871Z",
              **{"user.target.id": "07972d16-b173-4c99-803d-90f211080f40"}),  # L16
        admin("UPDATE:USER", "user-update", "2021-10-22T22:12:13.599Z",
              **{"user.target.id": "07972d16-b173-4c99-803d-90f211080f40"}),  # L17
        admin("CREATE:GROUP", "other", "2021-10-22T22:14:29.031Z"),  # L18
        admin("CREATE:CLIENT_SCOPE", "other", "2021-10-22T22:16:12.150Z"),  # L19
        Ev("LOGOUT", "user-logout", "success", None, CE637, CE637, "10.2.2.156", "2021-10-22T22:45:12.592Z",
           {"client.id": None}),  # L20 clientId=null
        admin("DELETE:GROUP", "other", "2021-10-22T22:46:14.913Z"),  # L21
        *[NOT_EVENT] * 7,  # L22 ERROR of com.example.BaseUserProvider, L23-28 its stack trace
        admin("CREATE:GROUP", "other", "2021-10-22T23:05:03.371Z"),  # L29 (groups/<id>/children)
        Ev("LOGOUT", "user-logout", "success", None, "dummyuser", "abcdef12-3456-7890-abcd-ef1234567890",
           "192.168.1.1", "2024-07-17T12:05:32.104Z",
           {"session.id": "abcd1234-5678-90ab-cdef-1234567890ab", "client.id": "user-console",
            "user.domain": "12345678-9abc-def0-1234-56789abcdef0", "log.level": "INFO"}),  # L30
    ],
    # Same server, time-only "HH:MM:SS,mmm" timestamps: event lines need the shipper's @timestamp.
    "elastic-integrations-test-log.12058986.log": [
        *[NOT_EVENT] * 17,  # L1-17 startup
        *[login_error("invalid_redirect_uri", "172.18.0.1", None)] * 8,  # L18-25
        login_error("invalid_user_credentials", "172.18.0.1", None, "admin", CC744),  # L26
        login_error("user_not_found", "172.18.0.1", None),  # L27 no username
        *[login_error("user_not_found", "172.18.0.1", None, "asdf")] * 3,  # L28-30 username=asdf, userId=null
        *[login_error("invalid_redirect_uri", "172.18.0.1", None)] * 2,  # L31-32
    ],
    "elastic-integrations-sample_logs-test-log.log": [
        login_error("invalid_user_credentials", "172.18.0.1", "2021-10-22T21:20:42.120Z", "admin", CC744),  # L1
        login_error("invalid_redirect_uri", "172.18.0.1", "2021-10-22T21:01:49.114Z"),  # L2
        NOT_EVENT,  # L3 RESTEASY startup line
        Ev("LOGIN", "user-login", "success", None, "admin", CE637, "10.2.2.156", "2021-10-22T22:11:31.257Z",
           {"user.domain": "TEST-REALM"}),  # L4
        Ev("LOGOUT", "user-logout", "success", None, CE637, CE637, "10.2.2.156", "2021-10-22T22:45:12.592Z",
           {"user.domain": "TEST-REALM"}),  # L5
        admin("CREATE:GROUP", "other", "2021-10-22T22:14:29.031Z", **{"user.domain": "TEST-REALM"}),  # L6
    ],
    # Keycloak 26.2 ECS-JSON console records: startup/Infinispan/JGroups only.
    "elastic-integrations-test-ecs-log.log": [NOT_EVENT] * 18,
    # Quarkus JSON console records (loggerName/message/timestamp).
    "datadog-keycloak_tests.log": [
        Ev("CODE_TO_TOKEN", "other", "success", None, DD_USER, DD_USER, "10.10.10.10", "2024-10-30T11:57:03.414Z",
           {"session.id": "25e60089-0911-4332-a7c3-71b17b038be5", "user.domain": "master",
            "client.id": "security-admin-console", "observer.hostname": "keycloak", "log.level": "DEBUG",
            "log.logger": "org.keycloak.events"}),  # L1 (+05:30 offset)
        NOT_EVENT,  # L2 ERROR record of ExecutionExceptionHandler without message
    ],
    # The message part only (no timestamp at all): needs the shipper's @timestamp.
    "datadog-keycloak-pipeline-samples.log": [
        login_error("invalid_user_credentials", "10.10.10.10", None, "admin", DD_USER,
                    **{"user.domain": '"master"'}),  # L1 realmName="\"master\"" -> "master" with its quotes
        Ev("CREATE:AUTH_FLOW", "other", "success", None, DD_USER, DD_USER, "10.10.10.10", None,
           {"event.provider": "keycloak-admin", "client.id": "21cba97c-4ce2-4272-8787-2f8016e43971"}),  # L2
        Ev("LOGIN", "user-login", "success", None, "admin", DD_USER, "10.10.10.10", None,
           {"session.id": "a6790922-e7c1-41c3-aade-c3f40d2fcf58", "user.domain": "master"}),  # L3
        Ev("REFRESH_TOKEN", "other", "success", None, DD_USER, DD_USER, "10.10.10.10", None,
           {"client.id": '"security=admin=console,test1"'}),  # L4 clientId with = and , inside quotes
    ],
    # Non-standard sysout listener ("Admin Event Occurred:"), no timestamp.
    "octoperf-kraken-sysout-listener.log": [
        Ev("CREATE:REALM_ROLE_MAPPING", "role-grant", "success", None, KRAKEN_ADMIN, KRAKEN_ADMIN, "127.0.0.1", None,
           {"user.target.id": "a83b98f2-2c52-40f3-a3a3-2276caeacd3b", "user.changes.roles": ["ADMIN"],
            "user.domain": "master"}),  # L1
        Ev("DELETE:USER", "user-delete", "success", None, KRAKEN_ADMIN, KRAKEN_ADMIN, "127.0.0.1", None,
           {"user.target.id": "0cb44ca3-0dd8-4fb9-8509-3feb1db3979b"}),  # L2 representation=null
    ],
    # Keycloak 26.4 ECS-JSON records (log.logger/message/@timestamp), quoted values.
    "sekoia-intake-formats-ecs-events.log": [
        Ev("LOGIN", "user-login", "success", None, "user-12345", "user-12345", "192.0.2.100",
           "2025-11-21T10:15:23.123Z", {"user.domain": "production", "observer.hostname": "example.com"}),  # L1
        login_error("expired_code", "1.2.3.4", "2025-11-13T16:07:05.472Z",
                    **{"log.level": "WARN"}),  # L2 userId="null"
        Ev("LOGOUT", "user-logout", "success", None, "user-67890", "user-67890", "198.51.100.50",
           "2025-11-21T14:30:45.987Z"),  # L3
        Ev("CODE_TO_TOKEN_ERROR", "other", "failure", "invalid_code", None, None, "198.51.100.123",
           "2025-11-21T13:55:09.111Z", {"user.domain": "staging"}),  # L4
        Ev("REFRESH_TOKEN", "other", "success", None, "user-abc123", "user-abc123", "203.0.113.25",
           "2025-11-21T11:45:12.555Z"),  # L5
        Ev("USER_INFO_REQUEST", "other", "success", None, "employee-555", "employee-555", "192.0.2.200",
           "2025-11-21T09:22:33.777Z", {"client.id": "api-service"}),  # L6
    ],
    # Quarkus console text, quoted values.
    "github-issue-epam-edp-keycloak-operator-252.log": [
        Ev("LOGIN", "user-login", "success", None, "admin", "7622f099-9ab9-4ff4-9b89-5c71e2f1bca8", "10.252.47.42",
           "2025-11-21T11:19:27.636Z",
           {"session.id": "91772140-8a71-439e-99cb-9dac8973f47d", "client.id": "admin-cli"}),  # L1
        Ev("CREATE:USER", "user-create", "success", None, "7622f099-9ab9-4ff4-9b89-5c71e2f1bca8",
           "7622f099-9ab9-4ff4-9b89-5c71e2f1bca8", "10.252.47.42", "2025-11-21T11:19:27.655Z",
           {"user.target.id": "fb0e78c0-76bb-45e4-9b9e-bbcf8012a48c"}),  # L2
    ],
    # docker-compose prefixed sysout listener ("Event Occurred:"), no timestamp.
    "github-issue-keycloak-24510-sysout.log": [
        Ev("LOGOUT", "user-logout", "success", None, "7147da01-9310-483e-92b6-4e50f5b1b4ed",
           "7147da01-9310-483e-92b6-4e50f5b1b4ed", "172.18.0.1", None, {"client.id": None}),  # L1 clientId=null
    ],
    "github-issue-keycloak-home-idp-discovery-355.log": [
        login_error("client_not_found", "192.168.65.1", "2024-04-30T09:17:55.121Z", **{"client.id": "realm1"}),  # L1
        login_error("client_not_found", "192.168.65.1", "2024-04-30T09:19:17.856Z", **{"client.id": "realm2"}),  # L2
    ],
    # Lines starting at "[org.keycloak.events]": no timestamp.
    "github-issue-keycloakify-935.log": [
        login_error("cookie_not_found", "172.17.0.1", None, **{"user.domain": "myrealm"}),  # L1
        login_error("user_not_found", "172.17.0.1", None),  # L2 no username detail
    ],
    # "+05" zone suffix and an empty MDC "[]".
    "github-issue-ovirt-web-ui-1652.log": [
        login_error("user_not_found", "10.0.1.2", "2023-01-03T12:05:14.325Z", "admin"),  # L1
        login_error("user_not_found", "10.0.1.2", "2023-01-03T12:05:37.831Z", "admin"),  # L2
    ],
    # docker-compose prefix and a time-only timestamp.
    "github-issue-shanoir-ng-72.log": [
        login_error("expired_code", "172.20.0.1", None, **{"client.id": None}),  # L1 clientId=null
    ],
}


def sample_cases() -> list[Any]:
    if not corpus.present("keycloak"):
        return [pytest.param(None, None, None, id="keycloak-absent",
                             marks=pytest.mark.skip(reason=corpus.missing_reason("keycloak")))]
    cases = []
    for name, rows in SAMPLE_LINES.items():
        for n, row in enumerate(rows, 1):
            cases.append(pytest.param(name, n, row, id=f"{name}:L{n}"))
    return cases


def read_lines(name: str) -> list[str]:
    return (KEYCLOAK / name).read_text(encoding="utf-8").splitlines()


def own_lines(name: str) -> list[str]:
    return (OWN / name).read_text(encoding="utf-8").splitlines()


def assert_failure(golden_pack: Any, res: dict[str, Any], original: str, *, mentions: str | None = None) -> str:
    assert res["index"] == golden_pack.index("failures"), json.dumps(res["doc"])[:1500]
    message = get_path(res["doc"], "error.message")
    assert message, res["doc"]
    assert get_path(res["doc"], "event.original") is None  # issue 9: a fingerprint in the failure index
    assert get_path(res["doc"], "event.original_sha256") == hashlib.sha256(original.encode()).hexdigest()
    if mentions:
        assert mentions in message.lower(), message
    return message


def assert_event(golden_pack: Any, res: dict[str, Any], ev: Ev, ts: str) -> None:
    doc = res["doc"]
    assert res["index"] != golden_pack.index("failures"), get_path(doc, "error.message")
    assert get_path(doc, "event.code") == ev.code
    assert get_path(doc, "event.action") == ev.action
    assert get_path(doc, "event.outcome") == ev.outcome
    assert get_path(doc, "event.reason") == ev.reason
    assert get_path(doc, "user.name") == ev.name
    assert get_path(doc, "user.id") == ev.uid
    assert get_path(doc, "source.ip") == ev.ip
    assert get_path(doc, "@timestamp") == ts
    assert get_path(doc, "observer.product") == "keycloak"
    assert get_path(doc, "pacs.source_format") == "keycloak"
    provider = "keycloak-admin" if ":" in ev.code else "keycloak"
    assert get_path(doc, "event.provider") == provider
    for field, value in ev.extra.items():
        assert get_path(doc, field) == value, field
    # "null" means absent: it never appears as a value outside the original.
    rest = {k: v for k, v in doc.items() if k != "event"}
    assert "null" not in walk_values(rest)
    assert "null" not in walk_values({k: v for k, v in doc["event"].items() if k != "original"})


@corpus.needs("keycloak")
def test_the_table_covers_every_sample_file_and_line() -> None:
    files = sorted(p.name for p in KEYCLOAK.glob("*.log"))
    assert files == sorted(SAMPLE_LINES), "a sample file without rows, or rows without a file"
    assert len(files) == 14
    for name, rows in SAMPLE_LINES.items():
        assert len(rows) == len(read_lines(name)), name


@pytest.mark.parametrize(("name", "n", "row"), sample_cases())
def test_sample_line(golden_pack: Any, simulate: Simulate, name: str, n: int, row: Ev | str) -> None:
    line = read_lines(name)[n - 1]
    res = simulate(line)
    if row == NOT_EVENT:
        assert_failure(golden_pack, res, line)
        return
    assert isinstance(row, Ev)
    if row.ts is not None:
        assert_event(golden_pack, res, row, row.ts)
        return
    # No full timestamp in the line: refused on its own, mapped with the shipper's @timestamp.
    assert_failure(golden_pack, res, line, mentions="timestamp")
    shipped = simulate({"message": line, "@timestamp": SHIPPER_TS})
    assert_event(golden_pack, shipped, row, SHIPPER_TS)
    assert get_path(shipped["doc"], "event.original") == line


def test_time_only_line_says_the_date_is_missing(golden_pack: Any, simulate: Simulate) -> None:
    line = own_lines("time-of-day-only.log")[1]
    message = assert_failure(golden_pack, simulate(line), line, mentions="timestamp")
    assert "07:34:15,730" in message and "no date" in message


def test_ecs_nanosecond_timestamp_is_parsed_to_utc(simulate: Simulate) -> None:
    # ECS @timestamp with nanoseconds and a JSON-console timestamp with an offset are both parsed to UTC.
    line = own_lines("ecs-json-console.log")[1]
    assert get_path(simulate(line)["doc"], "@timestamp") == "2025-10-20T08:16:02.987Z"
    line = own_lines("quarkus-json-console.log")[0]
    assert get_path(simulate(line)["doc"], "@timestamp") == "2025-09-14T08:32:11.513Z"


def test_the_line_timestamp_wins_over_the_shipper_timestamp(simulate: Simulate) -> None:
    line = own_lines("quarkus-console-quoted.log")[5]
    doc = simulate({"message": line, "@timestamp": SHIPPER_TS})["doc"]
    assert get_path(doc, "@timestamp") == "2025-06-03T09:14:02.776Z"
    assert get_path(doc, "event.action") == "user-login"


# ----------------------------------------------------------- one event, many shapes

FIELDS = [("type", "LOGIN_ERROR"), ("realmId", "5d0dd960-0478-4ca6-b64a-810a3f6f4071"), ("realmName", "myrealm"),
          ("clientId", "myclient"), ("userId", "null"), ("ipAddress", "172.17.0.1"), ("error", "user_not_found"),
          ("auth_method", "openid-connect"), ("redirect_uri", "https://pacs.example.org/viewer/?a=1&b=2"),
          ("username", "dr.house")]
COMPARED = ["@timestamp", "event.action", "event.outcome", "event.reason", "event.code", "event.provider",
            "user.name", "user.id", "user.domain", "client.id", "source.ip", "session.id", "observer.product",
            "event.category", "event.type", "related.user", "related.ip"]


def unquoted(fields: list[tuple[str, str]]) -> str:
    return ", ".join(f"{k}={v}" for k, v in fields)


def quoted(fields: list[tuple[str, str]]) -> str:
    return ", ".join(f'{k}="{v}"' for k, v in fields)


def test_quoted_unquoted_and_json_shapes_give_the_same_fields(golden_pack: Any, simulate: Simulate) -> None:
    prefix = "2024-01-22 10:14:06,733 WARN  [org.keycloak.events] (executor-thread-10) "
    shapes = {
        "unquoted": prefix + unquoted(FIELDS),
        "quoted": prefix + quoted(FIELDS),
        "json-console": json.dumps({"timestamp": "2024-01-22T11:14:06.733+01:00", "loggerName": "org.keycloak.events",
                                    "level": "WARN", "message": quoted(FIELDS)}),
        "ecs-json": json.dumps({"@timestamp": "2024-01-22T10:14:06.733Z", "log.logger": "org.keycloak.events",
                                "log.level": "WARN", "message": quoted(FIELDS)}),
        "ecs-json-as-document": {"@timestamp": "2024-01-22T10:14:06.733Z", "log": {"logger": "org.keycloak.events"},
                                 "message": unquoted(FIELDS)},
    }
    results = {}
    for shape, event in shapes.items():
        res = simulate(event)
        assert res["index"] != golden_pack.index("failures"), (shape, get_path(res["doc"], "error.message"))
        results[shape] = {f: get_path(res["doc"], f) for f in COMPARED}
    expected = results["unquoted"]
    assert expected["event.action"] == "user-login"
    assert expected["event.outcome"] == "failure"
    assert expected["event.reason"] == "user_not_found"
    assert expected["user.name"] == "dr.house"
    assert expected["user.id"] is None
    assert expected["user.domain"] == "myrealm"
    assert expected["@timestamp"] == "2024-01-22T10:14:06.733Z"
    for shape, got in results.items():
        assert got == expected, shape


def test_null_values_are_absent(simulate: Simulate) -> None:
    fields = [("type", "LOGOUT"), ("realmId", "r1"), ("clientId", "null"), ("userId", "u1"),
              ("sessionId", "null"), ("ipAddress", "null"), ("redirect_uri", "null")]
    for text in (unquoted(fields), quoted(fields)):
        doc = simulate(f"2024-01-22 10:14:06,733 DEBUG [org.keycloak.events] (t) {text}")["doc"]
        assert get_path(doc, "event.action") == "user-logout"
        assert get_path(doc, "user.id") == "u1"
        assert get_path(doc, "client") is None
        assert get_path(doc, "session") is None
        assert get_path(doc, "source") is None
        assert get_path(doc, "related.ip") == []
        assert "null" not in walk_values({k: v for k, v in doc.items() if k != "event"})


# ----------------------------------------------------------- admin events

ADMIN_REST = {
    "time": 1705918446733,
    "realmId": "a0e4b5c6-0000-4000-8000-000000000001",
    "authDetails": {"realmId": "master", "clientId": "security-admin-console", "userId": "admin-uid-1",
                    "ipAddress": "10.20.30.40"},
    "operationType": "CREATE",
    "resourceType": "REALM_ROLE_MAPPING",
    "resourcePath": "users/7f1e0d2c-target/role-mappings/realm",
    "representation": json.dumps([{"id": "r-1", "name": "radiologist", "composite": False},
                                  {"id": "r-2", "name": "pacs-admin", "composite": False}]),
    "error": None,
}


@pytest.mark.parametrize("as_text", [False, True], ids=["document", "json-text"])
def test_admin_rest_role_mapping_is_a_role_grant_with_target(golden_pack: Any, simulate: Simulate,
                                                             as_text: bool) -> None:
    res = simulate(json.dumps(ADMIN_REST) if as_text else dict(ADMIN_REST))
    doc = res["doc"]
    assert res["index"] != golden_pack.index("failures"), get_path(doc, "error.message")
    assert get_path(doc, "event.action") == "role-grant"
    assert get_path(doc, "event.outcome") == "success"
    assert get_path(doc, "event.code") == "CREATE:REALM_ROLE_MAPPING"
    assert get_path(doc, "event.provider") == "keycloak-admin"
    assert get_path(doc, "event.type") == ["user", "change", "admin"]
    assert get_path(doc, "user.target.id") == "7f1e0d2c-target"
    assert get_path(doc, "user.changes.roles") == ["radiologist", "pacs-admin"]
    assert get_path(doc, "user.name") == "admin-uid-1"
    assert get_path(doc, "user.id") == "admin-uid-1"
    assert get_path(doc, "user.domain") == "master"
    assert get_path(doc, "client.id") == "security-admin-console"
    assert get_path(doc, "source.ip") == "10.20.30.40"
    assert get_path(doc, "@timestamp") == "2024-01-22T10:14:06.733Z"
    assert set(get_path(doc, "related.user")) == {"admin-uid-1", "7f1e0d2c-target"}


@pytest.mark.parametrize(("operation", "resource", "path", "action"), [
    ("DELETE", "REALM_ROLE_MAPPING", "users/u-9/role-mappings/realm", "role-revoke"),
    ("CREATE", "CLIENT_ROLE_MAPPING", "users/u-9/role-mappings/clients/c-1", "role-grant"),
    ("DELETE", "CLIENT_ROLE_MAPPING", "users/u-9/role-mappings/clients/c-1", "role-revoke"),
    ("CREATE", "GROUP_MEMBERSHIP", "users/u-9/groups/g-1", "role-grant"),
    ("DELETE", "GROUP_MEMBERSHIP", "users/u-9/groups/g-1", "role-revoke"),
    ("CREATE", "USER", "users/u-9", "user-create"),
    ("UPDATE", "USER", "users/u-9", "user-update"),
    ("DELETE", "USER", "users/u-9", "user-delete"),
    ("ACTION", "USER", "users/u-9/reset-password", "other"),
    ("UPDATE", "REALM", "", "config-change"),
    ("UPDATE", "CLIENT", "clients/c-1", "config-change"),
    ("UPDATE", "AUTH_FLOW", "authentication/flows/f-1", "config-change"),
    ("CREATE", "CLIENT", "clients/c-1", "other"),
    ("DELETE", "GROUP", "groups/g-1", "other"),
])
def test_admin_operation_mapping(simulate: Simulate, operation: str, resource: str, path: str, action: str) -> None:
    text = (f'2024-01-22 10:14:06,733 DEBUG [org.keycloak.events] (executor-thread-3) operationType="{operation}", '
            f'realmId="r-master", realmName="master", clientId="c-admin", userId="a-1", ipAddress="10.0.0.5", '
            f'resourceType="{resource}", resourcePath="{path}"')
    doc = simulate(text)["doc"]
    assert get_path(doc, "event.action") == action, get_path(doc, "error.message")
    assert get_path(doc, "event.code") == f"{operation}:{resource}"
    assert get_path(doc, "user.domain") == "master"
    if path.startswith("users/"):
        assert get_path(doc, "user.target.id") == "u-9"
    else:
        assert get_path(doc, "user.target") is None


def test_admin_text_with_quoted_representation_and_error(simulate: Simulate) -> None:
    rep = json.dumps({"id": "g-1", "name": "radiology", "path": "/radiology"}).replace('"', '\\"')
    text = ('2024-01-22 10:14:06,733 WARN  [org.keycloak.events] (executor-thread-3) operationType="CREATE", '
            'realmId="r-master", realmName="master", clientId="c-admin", userId="a-1", ipAddress="10.0.0.5", '
            f'resourceType="GROUP_MEMBERSHIP", resourcePath="users/u-9/groups/g-1", error="unknown_error", '
            f'representation="{rep}"')
    doc = simulate(text)["doc"]
    assert get_path(doc, "event.action") == "role-grant"
    assert get_path(doc, "event.outcome") == "failure"
    assert get_path(doc, "event.reason") == "unknown_error"
    assert get_path(doc, "group.name") == "radiology"
    assert get_path(doc, "group.id") == "g-1"
    assert get_path(doc, "user.target.id") == "u-9"


def test_admin_rest_user_create_names_the_new_account(simulate: Simulate) -> None:
    event = dict(ADMIN_REST, operationType="CREATE", resourceType="USER", resourcePath="users/new-1",
                 representation=json.dumps({"username": "j.doe", "enabled": True}))
    doc = simulate(event)["doc"]
    assert get_path(doc, "event.action") == "user-create"
    assert get_path(doc, "user.target") == {"id": "new-1", "name": "j.doe"}


def test_admin_rest_with_unparsable_representation_keeps_the_event_without_roles(simulate: Simulate) -> None:
    doc = simulate(dict(ADMIN_REST, representation="[{\"name\": \"radiolog"))["doc"]
    assert get_path(doc, "event.action") == "role-grant"
    assert get_path(doc, "user.target.id") == "7f1e0d2c-target"
    assert get_path(doc, "user.changes") is None


def test_user_event_rest_json_with_format_hint(simulate: Simulate) -> None:
    doc = simulate({"pacsguard_format": "keycloak", "time": 1705918446733, "type": "UPDATE_PASSWORD",
                    "realmId": "r1", "clientId": "account-console", "userId": "u-1", "sessionId": "s-1",
                    "ipAddress": "10.1.2.3", "details": {"username": "dr.house"}})["doc"]
    assert get_path(doc, "event.action") == "user-update"
    assert get_path(doc, "event.outcome") == "success"
    assert get_path(doc, "user.name") == "dr.house"
    assert get_path(doc, "session.id") == "s-1"


@pytest.mark.parametrize(("etype", "action", "outcome"), [
    ("IDENTITY_PROVIDER_LOGIN", "user-login", "success"),
    ("IDENTITY_PROVIDER_LOGIN_ERROR", "user-login", "failure"),
    ("LOGOUT_ERROR", "user-logout", "failure"),
    ("REGISTER", "user-create", "success"),
    ("UPDATE_PASSWORD", "user-update", "success"),
    ("UPDATE_PROFILE", "user-update", "success"),
    ("UPDATE_EMAIL", "user-update", "success"),
    ("RESET_PASSWORD_ERROR", "user-update", "failure"),
    ("CODE_TO_TOKEN", "other", "success"),
    ("REFRESH_TOKEN_ERROR", "other", "failure"),
    ("CLIENT_LOGIN", "other", "success"),
])
def test_user_event_type_mapping(simulate: Simulate, etype: str, action: str, outcome: str) -> None:
    error = ", error=user_disabled" if etype.endswith("_ERROR") else ""
    doc = simulate(f"2024-01-22 10:14:06,733 WARN  [org.keycloak.events] (t) type={etype}, realmId=r, "
                   f"clientId=c, userId=u, ipAddress=10.0.0.1{error}, username=bob")["doc"]
    assert get_path(doc, "event.action") == action, get_path(doc, "error.message")
    assert get_path(doc, "event.outcome") == outcome
    assert get_path(doc, "event.reason") == ("user_disabled" if error else None)


def test_trace_details_with_brackets_and_single_quotes(simulate: Simulate) -> None:
    doc = simulate("2024-01-22 10:14:06,733 TRACE [org.keycloak.events] (t) type=LOGIN, realmId=r, clientId=c, "
                   "userId=u, ipAddress=10.0.0.1, scope='openid email', username=bob, "
                   "requestUri=https://kc/realms/r/protocol?a=b, cookies=[KC_RESTART=x, AUTH_SESSION_ID=y]")["doc"]
    assert get_path(doc, "event.action") == "user-login"
    assert get_path(doc, "user.name") == "bob"


# ----------------------------------------------------------- bad input

GOOD = own_lines("wildfly-console-unquoted.log")[2]  # LOGIN_ERROR, unquoted
GOOD_QUOTED = own_lines("quarkus-console-quoted.log")[1]  # LOGIN, quoted
GOOD_ADMIN = own_lines("quarkus-console-quoted.log")[2]  # admin CREATE USER, quoted


def cut(line: str, after: str, keep: int) -> str:
    """`line` cut `keep` characters into the text that follows `after`, as a truncated log line is."""
    return line[:line.index(after) + len(after) + keep]


@pytest.mark.parametrize(("event", "mentions"), [
    pytest.param(cut(GOOD, "clientId=", 4), "truncated", id="truncated-unquoted-before-userId"),
    pytest.param(cut(GOOD_ADMIN, 'userId="', 10), "truncated", id="truncated-admin"),
    pytest.param(GOOD.replace("LOGIN_ERROR", "LOGIN\ufffd\ufffdERROR"), "u+fffd", id="replacement-chars-in-type"),
    pytest.param(GOOD.replace("username=dr.okafor", "username=dr.ok\ufffdfor"), "u+fffd", id="replacement-char-in-a-value"),
    pytest.param(GOOD.replace("type=LOGIN_ERROR", "type=login error"), "type", id="type-not-a-keycloak-type"),
    pytest.param(GOOD_ADMIN.replace('operationType="CREATE"', 'operationType="CREATED"'), "operationtype",
                 id="unknown-operation"),
    pytest.param(GOOD.replace("2025-02-10 07:02:11,514", "2025-13-45 07:02:11,514"), "timestamp", id="invalid-date"),
    pytest.param(GOOD.replace("2025-02-10 07:02:11,514 ", ""), "timestamp", id="no-timestamp"),
    pytest.param(GOOD.replace("[org.keycloak.events]", "[org.keycloak.services]"), "org.keycloak.events",
                 id="other-category"),
    pytest.param("2021-10-22 21:20:42,120 WARN  [org.keycloak.events] (default task-2) Event listener failed",
                 "no keycloak event", id="keycloak-logger-but-no-event"),
    pytest.param(json.dumps({"timestamp": "2024-01-22T10:14:06Z", "loggerName": "org.keycloak.events",
                             "level": "WARN"}), "no message", id="json-record-without-message"),
    pytest.param(json.dumps({"timestamp": "2024-01-22T10:14:06Z", "loggerName": "org.keycloak.events",
                             "message": "type=LOGIN, realmId=r"}), "truncated", id="json-record-incomplete"),
])
def test_bad_text_lands_in_the_failure_index(golden_pack: Any, simulate: Simulate, event: str, mentions: str) -> None:
    assert_failure(golden_pack, simulate(event), event, mentions=mentions)


@pytest.mark.parametrize(("event", "mentions"), [
    pytest.param(cut(GOOD_QUOTED, 'sessionId="', 12), "the quoted value of [sessionId] is not closed",
                 id="truncated-quoted-inside-a-value"),
    pytest.param(GOOD_QUOTED[:GOOD_QUOTED.index(", auth_method=")] + ", auth_meth", "expected key=value at [auth_meth]",
                 id="truncated-inside-a-key"),
])
def test_a_truncated_line_with_an_action_and_an_actor_is_indexed_partial(
        golden_pack: Any, simulate: Simulate, event: str, mentions: str) -> None:
    """Issue 10: what could be read is indexed, tagged, the problem named; the rules still see it."""
    res = simulate(event)
    assert res["index"] == golden_pack.index("events_data_stream"), json.dumps(res["doc"])[:1500]
    assert get_path(res["doc"], "tags") == ["pacsguard-partial"]
    assert mentions in get_path(res["doc"], "error.message")
    assert get_path(res["doc"], "event.action") == "user-login"
    assert get_path(res["doc"], "user.id") is not None


@pytest.mark.parametrize(("change", "mentions"), [
    ({"operationType": 5}, "operationtype"),
    ({"operationType": "MERGE"}, "operationtype"),
    ({"resourceType": ["USER"]}, "resourcetype"),
    ({"authDetails": "admin"}, "authdetails"),
    ({"authDetails": {"userId": 42, "ipAddress": "10.0.0.1"}}, "userid"),
    ({"representation": 17}, "representation"),
    ({"time": {"ms": 1}}, "time"),
    ({"time": None}, "timestamp"),
    ({"time": "yesterday"}, "timestamp"),
    ({"authDetails": {"userId": "adm\ufffd\ufffdn", "ipAddress": "10.0.0.1"}}, "u+fffd"),
])
def test_bad_admin_rest_json_lands_in_the_failure_index(golden_pack: Any, simulate: Simulate,
                                                        change: dict[str, Any], mentions: str) -> None:
    event = json.dumps(dict(ADMIN_REST, **change))
    assert_failure(golden_pack, simulate(event), event, mentions=mentions)
