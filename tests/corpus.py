"""The public sample corpus: real audit messages published by others, kept OUTSIDE the repository.

It lives in ../shared/samples beside the repository root (see its README) and
may not be copied in. Tests on it run where it is present and are reported as
skipped, with the reason, where it is not (a fresh clone). The repository's own
inputs (pipelines/<source>/_dev/test/pipeline/) cover the same cases and always run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"


def folder(name: str) -> Path:
    return SAMPLES / name


def missing_reason(name: str) -> str:
    return (f"public sample corpus ../shared/samples not present: {folder(name)} does not exist "
            "(it is not part of the repository; the repository's own inputs under pipelines/ still ran)")


def present(name: str) -> bool:
    return folder(name).is_dir()


def needs(name: str) -> pytest.MarkDecorator:
    """Skip marker for a test that reads the corpus folder `name`."""
    return pytest.mark.skipif(not present(name), reason=missing_reason(name))


def files(name: str, *, exclude_prefix: str | None = None) -> list[Any]:
    """pytest params, one per file of the corpus folder `name` (sorted by name).

    Without the corpus: a single param that is skipped with the reason, so the
    report says why instead of collecting nothing."""
    if not present(name):
        return [pytest.param(None, id=f"{name}-absent", marks=pytest.mark.skip(reason=missing_reason(name)))]
    return [pytest.param(p.name, id=p.name) for p in sorted(folder(name).iterdir())
            if p.is_file() and not (exclude_prefix and p.name.startswith(exclude_prefix))]


def names(name: str) -> list[str]:
    """File names of the corpus folder `name`; empty without the corpus."""
    return sorted(p.name for p in folder(name).iterdir() if p.is_file()) if present(name) else []
