"""Rendering content (Jinja2, sandboxed, StrictUndefined) and the content hash, without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from pacsguard.core.render import ContentError, canonical_hash, render_yaml


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thing.yaml"
    path.write_text(text)
    return path


def test_renders_yaml_with_the_context(tmp_path: Path) -> None:
    path = write(tmp_path, "id: '{{ prefix }}-x'\nbody:\n  n: {{ limits.max }}\n  l: {{ names | tojson }}\n")
    assert render_yaml(path, {"prefix": "pg", "limits": {"max": 5}, "names": ["a", "b"]}) == \
        {"id": "pg-x", "body": {"n": 5, "l": ["a", "b"]}}


@pytest.mark.parametrize(("text", "line", "name"), [
    ("a: 1\nb: {{ missing }}\n", 2, "'missing' is undefined"),
    ("a: 1\n{% if true %}\nb: 2\nc: {{ limits.nope }}\n{% endif %}\n", 4, "has no attribute 'nope'"),
    ("a: 1\nb: 2\nc: 3\nd: {{ missing | tojson }}\n", 4, "'missing' is undefined"),
])
def test_an_undefined_name_is_an_error_with_file_and_line(tmp_path: Path, text: str, line: int, name: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ContentError) as err:
        render_yaml(path, {"limits": {"max": 5}})
    assert str(err.value).startswith(f"{path}:{line}: template error: "), err.value
    assert name in str(err.value)


def test_a_template_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\nb: {{ unclosed\n")
    with pytest.raises(ContentError, match=rf"^{path}:2: template error: "):
        render_yaml(path, {})


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ContentError, match=rf"^{path}:\d+: invalid YAML"):
        render_yaml(path, {})


def test_the_sandbox_refuses_python_internals(tmp_path: Path) -> None:
    path = write(tmp_path, "a: '{{ x.__class__.__mro__ }}'\n")
    with pytest.raises(ContentError, match="template error"):
        render_yaml(path, {"x": "s"})


def test_canonical_hash_ignores_key_order_and_whitespace() -> None:
    a = {"description": "d", "processors": [{"set": {"field": "a", "value": 1}}], "meta": {"x": 1, "y": [1, 2]}}
    b = {"meta": {"y": [1, 2], "x": 1}, "processors": [{"set": {"value": 1, "field": "a"}}], "description": "d"}
    assert canonical_hash(a) == canonical_hash(b)
    assert len(canonical_hash(a)) == 16 and int(canonical_hash(a), 16) >= 0


def test_canonical_hash_sees_every_change_of_content() -> None:
    base = {"processors": [{"set": {"field": "a", "value": 1}}, {"remove": {"field": "b"}}]}
    assert canonical_hash(base) != canonical_hash({"processors": list(reversed(base["processors"]))})  # order of a list
    assert canonical_hash(base) != canonical_hash({"processors": [{"set": {"field": "a", "value": "1"}}]})
    assert canonical_hash({"v": "é"}) != canonical_hash({"v": "e"})
