"""The README's own text, as tests read it: the code blocks of one section, in order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    lang: str
    text: str


def section(heading: str, path: Path = README) -> str:
    """The text under the heading line that starts with `heading`, up to the next heading (of any level;
    a `#` line inside a code block is no heading)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    if not starts:
        raise AssertionError(f"{path.name} has no heading {heading!r}")
    body: list[str] = []
    fenced = False
    for line in lines[starts[0] + 1:]:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"^#+ ", line):
            break
        body.append(line)
    return "".join(body)


def blocks(text: str) -> list[Block]:
    return [Block(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def make_recipe(target: str, makefile: Path | None = None) -> list[str]:
    """The command lines of a Makefile target (its prerequisites are not run)."""
    makefile = makefile or README.parent / "Makefile"
    lines = makefile.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^{re.escape(target)}\s*:", line):
            recipe = []
            for cmd in lines[i + 1:]:
                if not cmd.startswith("\t"):
                    break
                recipe.append(cmd.strip())
            return recipe
    raise AssertionError(f"the Makefile has no target {target!r}")
