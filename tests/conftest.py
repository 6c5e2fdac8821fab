"""Fixtures shared by tests/unit (no cluster) and tests/cluster (a real node).

The node comes from tests/testnode.py: PACSGUARD_TEST_URL (any cluster), or a
local node this session starts on a port of its own and stops at the end.
Tests isolate themselves with their own id_prefix and namespace, so they can
share one node.

Helpers live in modules named for what they hold (testnode, corpus, documents),
not here: `from conftest import ...` would find whichever conftest.py was
imported last.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pacsguard.collector.atna_envelope import set_envelope_key
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from testnode import (
    ALERTING_PORT_OFFSET,
    ALERTING_VERSION,
    PLUGIN_ZIPS,
    TEST_ENVELOPE_KEY,
    SessionNode,
    first_test_port,
    installed_pack,
    make_settings,
    session_node,
)

TESTS = Path(__file__).resolve().parent
_counter = itertools.count()
_started: list[SessionNode] = []
# Every ATNA envelope a test makes, in this process or in a CLI process it starts, is signed with
# the key the test installs carry (testnode.make_settings).
os.environ["PACSGUARD_ENVELOPE_KEY"] = TEST_ENVELOPE_KEY
set_envelope_key(TEST_ENVELOPE_KEY)

Simulate = Callable[[Any], dict[str, Any]]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--generate", action="store_true", default=False,
                     help="rewrite the expected files of the pipeline golden tests from what the node returns "
                          "(review the diff before committing)")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test outside tests/cluster must not reach for the node: `-m "not cluster"` starts none."""
    cluster_dir = TESTS / "cluster"
    offenders = [item.nodeid for item in items
                 if "cluster_url" in getattr(item, "fixturenames", ())
                 and cluster_dir not in Path(str(item.path)).parents]
    if offenders:
        raise pytest.UsageError("tests that use the cluster belong under tests/cluster/: " + ", ".join(offenders))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for node in _started:
        where = f"port {node.port}, OpenSearch {node.version}" if node.port is not None else "a cluster given by URL"
        terminalreporter.write_line(f"pacsguard test node: {node.url} ({where})")


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's own state dir (XDG_STATE_HOME): what `watch` delivers to the local inbox and
    what the collector keeps stays out of the home of whoever runs the tests."""
    before = os.environ.get("XDG_STATE_HOME")
    path = tmp_path_factory.mktemp("state")
    os.environ["XDG_STATE_HOME"] = str(path)
    yield path
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture(scope="session")
def test_node() -> Iterator[SessionNode]:
    with session_node() as node:
        _started.append(node)
        yield node


@pytest.fixture(scope="session")
def cluster_url(test_node: SessionNode) -> str:
    return test_node.url


@pytest.fixture(scope="session")
def alerting_url() -> Iterator[str]:
    """A second node with the real Alerting and Notifications plugins, for the Alerting path.

    PACSGUARD_TEST_ALERTING_URL names a cluster that has them; otherwise a local node is built
    with the zips in ../shared/opensearch-plugins/2.19.6 (PACSGUARD_TEST_PLUGIN_ZIPS: another
    folder) under a cache key of its own. Without them (a user's clone) the tests skip."""
    zips = Path(os.environ.get("PACSGUARD_TEST_PLUGIN_ZIPS") or PLUGIN_ZIPS)
    if not os.environ.get("PACSGUARD_TEST_ALERTING_URL") and not zips.is_dir():
        pytest.skip(f"Alerting/Notifications plugin zips not present at {zips} (they are not on Maven Central "
                    "and not part of the repository; CI has them beside the clone). Set "
                    "PACSGUARD_TEST_ALERTING_URL to a cluster that runs Alerting to run these tests.")
    # the zips are plugins of 2.19.6: the Alerting node stays on that line whatever the session's line
    with session_node(ALERTING_VERSION, "PACSGUARD_TEST_ALERTING_URL", first_test_port() + ALERTING_PORT_OFFSET,
                      zips) as node:
        plugins, _ = Cluster.connect(make_settings(node.url, "pgcheck", "check").cluster).installed_components()
        missing = {"opensearch-alerting", "opensearch-notifications"} - plugins
        assert not missing, f"the Alerting node at {node.url} lacks {', '.join(sorted(missing))}"
        _started.append(node)
        yield node.url


@pytest.fixture
def unique() -> str:
    """A short unique suffix for ids and namespaces."""
    return f"{next(_counter)}{uuid.uuid4().hex[:6]}"


@pytest.fixture
def pack_settings(cluster_url: str, unique: str) -> Iterator[Settings]:
    """Settings for an isolated install: prefix pgt<unique>, namespace t<unique>.

    Whatever the test installed is purged afterwards, so a run against a shared
    cluster (PACSGUARD_TEST_URL) leaves nothing behind."""
    from pacsguard.services.install import uninstall

    settings = make_settings(cluster_url, f"pgt{unique}", f"t{unique}")
    yield settings
    uninstall(Cluster.connect(settings.cluster), settings, purge=True)


@pytest.fixture
def cluster(cluster_url: str, pack_settings: Settings) -> Cluster:
    return Cluster.connect(pack_settings.cluster)


@pytest.fixture
def pack(cluster: Cluster, pack_settings: Settings) -> Settings:
    """The pack installed on pack_settings (without the monitors where Alerting is missing);
    pack_settings purges it afterwards."""
    from pacsguard.services.install import install

    install(cluster, pack_settings, allow_missing_plugins=True)
    return pack_settings


@pytest.fixture(scope="session")
def golden_pack(cluster_url: str) -> Iterator[Settings]:
    """One install shared by the pipeline tests (prefix pggold, namespace golden); purged at the end.

    Its back- and future-dating windows are a century wide: the golden inputs carry fixed
    historical timestamps, and whether enrich tags them pacsguard-backdated depends on the
    clock of the day the tests run, not on the pipeline."""
    with installed_pack(cluster_url, "pggold", "golden",
                        thresholds={"max_backdate_window": "36500d", "max_future_window": "36500d"}) as settings:
        yield settings


@pytest.fixture(scope="session")
def simulate_many(golden_pack: Settings) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Run documents through the installed router with one _simulate call.

    Returns, per document, {"index": the index it would be written to, "doc": _source}."""
    cluster = Cluster.connect(golden_pack.cluster)
    router = f"{golden_pack.scope}-router"

    def run(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        index = golden_pack.index("events_data_stream")
        res = cluster.request("POST", f"/_ingest/pipeline/{router}/_simulate",
                              body={"docs": [{"_index": index, "_source": s} for s in sources]})
        out = []
        for result in res["docs"]:
            if result is not None and "error" in result:
                raise AssertionError(f"simulate error: {json.dumps(result['error'])[:2000]}")
            if result is None or result.get("doc") is None:  # a pipeline's drop processor: nothing is written
                out.append({"index": "dropped", "doc": None})  # golden.DROPPED
                continue
            out.append({"index": result["doc"]["_index"], "doc": result["doc"]["_source"]})
        return out

    return run


@pytest.fixture(scope="session")
def simulate(simulate_many: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Simulate:
    """Run one raw event through the installed router with _simulate.

    Accepts a str (sent as `message`, like a shipper does) or a dict (sent as
    the document). Returns {"index": target index, "doc": resulting _source}.
    """
    def run(event: Any) -> dict[str, Any]:
        return simulate_many([{"message": event} if isinstance(event, str) else event])[0]

    return run


# ------------------------------------------------------------------ Keycloak


@pytest.fixture(scope="session")
def keycloak() -> Iterator[Any]:
    """One local Keycloak for the session (pacsguard.devnode.keycloak), from the cached distribution.

    On a port this session claims (PACSGUARD_TEST_KEYCLOAK_PORT is the first one tried,
    default the first OpenSearch test port + 1000), so two runs at once never share, or
    stop, each other's Keycloak; stopped at the end unless PACSGUARD_KEEP_KEYCLOAK is set. Its database is kept between sessions (a warm
    start); tests create users of their own with unique names. The console logs
    text and the event file JSON records, so one run yields both formats.
    """
    from pacsguard.devnode import keycloak as devkc
    from pacsguard.devnode import local

    claim = local.claim_port(int(os.environ.get("PACSGUARD_TEST_KEYCLOAK_PORT") or first_test_port() + 1000))
    port = claim.port
    try:
        state = devkc.up(port, console_format="text", file_format="json")
        try:
            yield state
        finally:
            if not os.environ.get("PACSGUARD_KEEP_KEYCLOAK"):
                devkc.down(port)
    finally:
        claim.release()


@pytest.fixture(scope="session")
def kc_admin(keycloak: Any) -> Any:
    """The bootstrap admin's REST client (realm master)."""
    return keycloak.admin_api()


@pytest.fixture
def new_user(keycloak: Any, kc_admin: Any) -> Callable[..., Any]:
    """Create a user of our own in the test realm: new_user(roles=[...], prefix='t') -> RealmUser."""
    import secrets

    from keycloak_helpers import RealmUser
    from pacsguard.devnode import keycloak as devkc
    from pydantic import SecretStr

    def make(roles: Sequence[str] = (), prefix: str = "t") -> RealmUser:
        name = f"{prefix}{uuid.uuid4().hex[:10]}"
        password = SecretStr(secrets.token_urlsafe(12))
        return RealmUser(name, devkc.create_user(kc_admin, keycloak.realm, name, password, roles), password)

    return make
