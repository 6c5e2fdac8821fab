"""The OpenSearch node a test session runs against, and settings for an isolated install on it.

PACSGUARD_TEST_URL names any cluster to use as is. Otherwise the session starts
its own local node with empty data and stops it at the end. Each session
claims its own port (PACSGUARD_TEST_PORT is the first one tried, 9260 by
default): two runs at once on one machine get two nodes, two run directories,
and neither stops the other's node. PACSGUARD_TEST_VERSION picks the node's
OpenSearch version (a 2.19.x or 3.x the recipe builds; default the recipe's,
2.19.6): `make test` runs the whole suite on the default and the `both_lines`
subset again on 3.8.0.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsguard.core.settings import Settings, load_settings

DEFAULT_FIRST_PORT = 9260
# The Alerting node's ports start this far above the first node's.
ALERTING_PORT_OFFSET = 40
# The Alerting and Notifications plugin zips (built from their public sources) beside a CI clone;
# a user's clone has no ../shared, and the tests that need them skip, saying so.
ALERTING_VERSION = "2.19.6"
PLUGIN_ZIPS = Path(__file__).resolve().parents[2] / "shared" / "opensearch-plugins" / ALERTING_VERSION
TEST_SALT = "test-salt-0123456789abcdef"
# The collector's envelope key in every test (tests/conftest.py gives it to in-process conversions
# and, through PACSGUARD_ENVELOPE_KEY, to the CLI processes tests start): fixed, so a failure
# envelope's fingerprint in a golden file does not depend on the machine's key file.
TEST_ENVELOPE_KEY = "0123456789abcdef" * 4


@dataclass(frozen=True)
class SessionNode:
    url: str
    # The local node's port; None for a cluster given by PACSGUARD_TEST_URL (not ours to stop).
    port: int | None
    # The OpenSearch version of the local node; None for a cluster given by PACSGUARD_TEST_URL.
    version: str | None = None


def first_test_port() -> int:
    """The first port a session tries for its node (PACSGUARD_TEST_PORT, else 9260)."""
    return int(os.environ.get("PACSGUARD_TEST_PORT") or DEFAULT_FIRST_PORT)


def node_version() -> str | None:
    """The OpenSearch version the session's local node runs (PACSGUARD_TEST_VERSION), None: the default."""
    return os.environ.get("PACSGUARD_TEST_VERSION") or None


@contextmanager
def session_node(version: str | None = None, url_env: str = "PACSGUARD_TEST_URL", first_port: int | None = None,
                 plugin_dir: Path | None = None) -> Iterator[SessionNode]:
    """The session's node: the cluster named by url_env as is, else a local node of `version`
    (default node_version(), else the recipe's default) on a port of its own, stopped at the end,
    built with the plugin zips of plugin_dir if given (its own cache key, never the node built
    without them)."""
    url = os.environ.get(url_env)
    if url:
        yield SessionNode(url, None)
        return
    from pacsguard.devnode import local

    claim = local.claim_port(first_port or first_test_port())
    try:
        state = local.up(claim.port, fresh=True, version=version or node_version(), plugin_dir=plugin_dir)
        try:
            yield SessionNode(state.url, claim.port, state.version)
        finally:
            if not os.environ.get("PACSGUARD_KEEP_NODE"):
                local.down(claim.port)
    finally:
        claim.release()


def make_settings(url: str, prefix: str, namespace: str, **extra: Any) -> Settings:
    overrides: dict[str, Any] = {
        "cluster": {"url": url},
        "id_prefix": prefix,
        "namespace": namespace,
        "pseudonymization": {"salt": TEST_SALT, "envelope_key": TEST_ENVELOPE_KEY},
    }
    overrides.update(extra)
    return load_settings(overrides=overrides, environ={})


@contextmanager
def installed_pack(url: str, prefix: str, namespace: str, **extra: Any) -> Iterator[Settings]:
    """make_settings(...) installed (without the plugins a node may lack) for the block; purged after."""
    from pacsguard.core.connection import Cluster
    from pacsguard.services.install import install, uninstall

    settings = make_settings(url, prefix, namespace, **extra)
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    try:
        yield settings
    finally:
        uninstall(cluster, settings, purge=True)
