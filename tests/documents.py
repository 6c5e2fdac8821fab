"""Reading the documents a pipeline produced."""

from __future__ import annotations

from typing import Any


def get_path(doc: dict[str, Any], dotted: str) -> Any:
    """doc['a']['b'] for 'a.b', None where absent."""
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def walk_values(node: Any) -> list[Any]:
    """Every leaf value of a document."""
    if isinstance(node, dict):
        return [v for value in node.values() for v in walk_values(value)]
    if isinstance(node, list):
        return [v for value in node for v in walk_values(value)]
    return [node]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b': leaf} for every leaf of a document; lists are leaves (their order matters)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}
