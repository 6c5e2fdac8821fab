"""The OpenSearch lines the pack supports (2.19 and 3.x), as pack/local-node.yaml lists them.

The dev node resolves its recipe through these (which classes, jars and Java a version
takes), `pacsguard status` says through them whether a cluster's version is supported,
and the tests pick the version of their node with them.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from pacsguard.core.content import content_path
from pacsguard.core.errors import PacsguardError

VERSION_ENV = "PACSGUARD_OPENSEARCH_VERSION"


def raw_recipe() -> dict[str, Any]:
    with content_path("pack", "local-node.yaml").open() as fh:
        recipe: dict[str, Any] = yaml.safe_load(fh)
    return recipe


def _known(recipe: dict[str, Any]) -> str:
    return " and ".join(f"{name}.x" for name in recipe["lines"])


def line_of(version: str, recipe: dict[str, Any] | None = None) -> str | None:
    """The name of the line a version belongs to ("2.19", "3"), or None."""
    recipe = recipe or raw_recipe()
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    for name in recipe["lines"]:
        if parts[:len(name.split("."))] == name.split("."):
            return str(name)
    return None


def chosen_version(version: str | None = None, recipe: dict[str, Any] | None = None) -> str:
    """The node version: the one given, else PACSGUARD_OPENSEARCH_VERSION, else the recipe's default.
    A version outside the supported lines is refused, naming them."""
    recipe = recipe or raw_recipe()
    chosen = version or os.environ.get(VERSION_ENV) or str(recipe["default_version"])
    if line_of(chosen, recipe) is None:
        tested = ", ".join(v for line in recipe["lines"].values() for v in line["tested"])
        raise PacsguardError(f"OpenSearch {chosen!r}: the dev node builds {_known(recipe)} versions "
                             f"(x.y.z; tested: {tested})")
    return chosen


def support(version: str) -> str:
    """Whether the pack supports a cluster of this version, in one phrase for `status`."""
    recipe = raw_recipe()
    name = line_of(version, recipe)
    if name is None:
        return f"NOT supported: the pack supports OpenSearch {_known(recipe)}"
    return f"supported ({name} line, tested on {', '.join(recipe['lines'][name]['tested'])})"
