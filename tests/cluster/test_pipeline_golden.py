"""Golden tests: every raw input under pipelines/*/_dev/test/pipeline/ through the installed
router on the real node (_simulate), compared with the expected file beside it.

`pytest tests/cluster/test_pipeline_golden.py --generate` rewrites the expected files from
what the node returns; review the diff (git diff pipelines/) before committing it.
The layout is described in tests/golden.py; tests/unit/test_golden_layout.py checks it
without a node.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import golden
import pytest
from pacsguard.core.settings import Settings

INPUTS = golden.all_inputs()


@pytest.mark.parametrize("input_path", INPUTS, ids=[golden.rel(p).removeprefix("pipelines/") for p in INPUTS])
def test_golden(input_path: Path, request: pytest.FixtureRequest, golden_pack: Settings,
                simulate_many: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    config = golden.config_for(input_path)
    events = golden.read_events(input_path, config)
    roles = {golden_pack.index("events_data_stream"): "events", golden_pack.index("failures"): "failures"}
    results = simulate_many([e.source for e in events])
    actual = [golden.normalize({"index": roles.get(r["index"], r["index"]), "doc": r["doc"]}, config)
              for r in results]
    if request.config.getoption("--generate"):
        golden.write_expected(input_path, actual)
        return
    if not golden.expected_path(input_path).exists():
        pytest.fail(f"{golden.rel(golden.expected_path(input_path))} is missing: run this test with --generate, "
                    "then review what it wrote")
    diffs = golden.differences(events, actual, golden.load_expected(input_path))
    assert not diffs, (f"{golden.rel(input_path)} differs from its expected file "
                       "(after reviewing, --generate rewrites it):\n  " + "\n  ".join(diffs))
