"""Every test under tests/cluster talks to a real OpenSearch node: marked `cluster` here,
so a test file cannot forget the marker and `-m "not cluster"` never starts a node."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.cluster)
