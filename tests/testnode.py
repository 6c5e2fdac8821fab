"""The OpenSearch node a test session runs against, and settings for an isolated install on it.

PACSGUARD_TEST_URL names any cluster to use as is. Otherwise the session starts
its own local node with empty data and stops it at the end. Each session
claims its own port (PACSGUARD_TEST_PORT is the first one tried, 9260 by
default): two runs at once on one machine get two nodes, two run directories,
and neither stops the other's node.
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
PLUGIN_ZIPS = Path(__file__).resolve().parents[2] / "shared" / "opensearch-plugins" / "2.19.6"
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


def first_test_port() -> int:
    """The first port a session tries for its node (PACSGUARD_TEST_PORT, else 9260)."""
    return int(os.environ.get("PACSGUARD_TEST_PORT") or DEFAULT_FIRST_PORT)


@contextmanager
def session_node(url_env: str = "PACSGUARD_TEST_URL", first_port: int | None = None,
                 plugin_dir: Path | None = None) -> Iterator[SessionNode]:
    """The cluster named by url_env, else a local node of this session (built with the plugin
    zips of plugin_dir, if given: its own cache key, never the node built without them)."""
    url = os.environ.get(url_env)
    if url:
        yield SessionNode(url, None)
        return
    from pacsguard.devnode import local

    claim = local.claim_port(first_port or first_test_port())
    try:
        state = local.up(claim.port, fresh=True, plugin_dir=plugin_dir)
        try:
            yield SessionNode(state.url, claim.port)
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
