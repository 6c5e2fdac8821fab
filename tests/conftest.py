"""Fixtures: a real OpenSearch for the whole session, and isolated pack installs.

The node comes from PACSGUARD_TEST_URL (any cluster) or is started here from
the local Maven-built distribution on a port of its own with empty data, and
stopped at the end. Tests isolate themselves with their own id_prefix and
namespace, so they can share one node.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings, load_settings

TEST_PORT = int(os.environ.get("PACSGUARD_TEST_PORT", "9260"))
SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
_counter = itertools.count()


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    url = os.environ.get("PACSGUARD_TEST_URL")
    if url:
        yield url
        return
    from pacsguard.devnode import local

    state = local.up(TEST_PORT, fresh=True)
    try:
        yield state.url
    finally:
        if not os.environ.get("PACSGUARD_KEEP_NODE"):
            local.down(TEST_PORT)


def make_settings(url: str, prefix: str, namespace: str, **extra: Any) -> Settings:
    overrides: dict[str, Any] = {
        "cluster": {"url": url},
        "id_prefix": prefix,
        "namespace": namespace,
        "pseudonymization": {"salt": "test-salt-0123456789abcdef"},
    }
    overrides.update(extra)
    return load_settings(overrides=overrides, environ={})


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


@pytest.fixture(scope="session")
def golden_pack(cluster_url: str) -> Iterator[Settings]:
    """One install shared by the pipeline golden tests (prefix pggold, namespace golden); purged at the end."""
    from pacsguard.services.install import install, uninstall

    settings = make_settings(cluster_url, "pggold", "golden")
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    yield settings
    uninstall(cluster, settings, purge=True)


@pytest.fixture(scope="session")
def simulate(golden_pack: Settings) -> Callable[[Any], dict[str, Any]]:
    """Run one raw event through the installed router with _simulate.

    Accepts a str (sent as `message`, like a shipper does) or a dict (sent as
    the document). Returns {"index": target index, "doc": resulting _source}.
    """
    cluster = Cluster.connect(golden_pack.cluster)
    router = f"{golden_pack.scope}-router"

    def run(event: Any) -> dict[str, Any]:
        source = {"message": event} if isinstance(event, str) else event
        res = cluster.request("POST", f"/_ingest/pipeline/{router}/_simulate",
                              body={"docs": [{"_index": golden_pack.index("events_data_stream"),
                                              "_source": source}]})
        result = res["docs"][0]
        if "error" in result:
            raise AssertionError(f"simulate error: {json.dumps(result['error'])[:2000]}")
        return {"index": result["doc"]["_index"], "doc": result["doc"]["_source"]}

    return run


def get_path(doc: dict[str, Any], dotted: str) -> Any:
    """doc['a']['b'] for 'a.b', None where absent."""
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
