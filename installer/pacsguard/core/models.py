"""Shapes shared by every layer: the frozen model base and the progress callback."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A Progress that says nothing."""


class Frozen(BaseModel):
    """An immutable model that refuses unknown keys (a typo in content is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
