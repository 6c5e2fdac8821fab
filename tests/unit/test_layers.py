"""Dependencies run one way: cli -> services -> domain -> core. Every import in the package,
including those inside functions, is read from the source and checked."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "installer" / "pacsguard"
CORE, DOMAIN, SERVICES, CLI = 0, 1, 2, 3
NAMES = {CORE: "core", DOMAIN: "domain", SERVICES: "services", CLI: "cli"}


def layer(module: str) -> int:
    parts = module.split(".")
    if parts[:2] == ["pacsguard", "core"] or parts == ["pacsguard"]:
        return CORE
    if parts[:2] == ["pacsguard", "services"]:
        return SERVICES
    if parts[:2] == ["pacsguard", "cli"]:
        return CLI
    return DOMAIN


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "pacsguard"]


def test_no_module_imports_a_higher_layer() -> None:
    offenders = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 40
    for path in modules:
        importer = module_name(path)
        for line, imported in imports(path):
            if layer(imported) > layer(importer):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {NAMES[layer(importer)]} module "
                                 f"{importer} imports {NAMES[layer(imported)]} module {imported}")
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_a_backward_import(tmp_path: Path) -> None:
    """The checker itself: a core module importing a service is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pacsguard.services.install import install\n")
    assert imports(bad) == [(2, "pacsguard.services.install")]
    assert layer("pacsguard.services.install") > layer("pacsguard.core.settings")
