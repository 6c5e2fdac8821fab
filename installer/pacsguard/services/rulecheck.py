"""`pacsguard rules validate`: every rules folder (the pack's and the team's), each rule
compiled with this installation's settings and checked against its folder's version lock;
every problem as `path:line: message`, rendered as text, JSON, GitHub annotations or JUnit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings
from pacsguard.rules.catalog import all_rules, pack_folder, rule_folders
from pacsguard.rules.compiler import render_monitor
from pacsguard.rules.lock import LOCK_FILE, lock_problems, write_lock
from pacsguard.rules.model import Rule, RuleError, load_rule_sets
from pacsguard.rules.report import Case, Problem, github, junit, problems_of


@dataclass
class Validation:
    folders: list[tuple[Path, bool]]
    rules: list[Rule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def files(self) -> list[str]:
        """Every rule file and lock of the folders: one JUnit case each."""
        out = []
        for folder, _ in self.folders:
            out += [str(p) for p in sorted(folder.glob("*.yml"))]
            out.append(str(folder / LOCK_FILE))
        return out


def folders_for(settings: Settings, folder: Path | None) -> list[tuple[Path, bool]]:
    """The settings' folders, or the pack's and one more (a team's repository in its CI)."""
    if folder is None:
        return rule_folders(settings)
    if folder.resolve() == pack_folder().resolve():
        return [(pack_folder(), False)]
    return [(pack_folder(), False), (folder, True)]


def validate(settings: Settings, folder: Path | None = None) -> Validation:
    v = Validation(folders_for(settings, folder))
    try:
        v.rules = load_rule_sets(v.folders)
        if folder is None:
            all_rules(settings)  # overrides must name a rule
    except RuleError as exc:
        v.problems = problems_of(str(exc))
        return v
    for rule in v.rules:
        try:
            render_monitor(rule, settings)  # a rule must also compile with this installation's settings
        except (PacsguardError, ValueError) as exc:
            v.problems.append(Problem(str(rule.path), 1, f"does not compile with these settings: {exc}"))
    for path, _ in v.folders:
        mine = [r for r in v.rules if r.path is not None and r.path.parent.resolve() == path.resolve()]
        v.problems += [p for line in lock_problems(mine, path) for p in problems_of(line)]
    return v


def lock(settings: Settings, folder: Path | None = None) -> list[tuple[Path, int]]:
    """Rewrite the lock of each folder (a rule changed without a version bump is refused)."""
    folders = folders_for(settings, folder)
    rules = load_rule_sets(folders)
    out = []
    for path, _ in folders if folder is None else [folders[-1]]:
        mine = [r for r in rules if r.path is not None and r.path.parent.resolve() == path.resolve()]
        unbumped = [p for p in lock_problems(mine, path) if "bump version" in p]
        if unbumped:
            raise RuleError("\n".join(unbumped))
        out.append((write_lock(mine, path), len(mine)))
    return out


def render(v: Validation, fmt: str) -> str:
    """text | github | junit (json is the CLI's --json shape, built there)."""
    if fmt == "github":
        return github(v.problems) if v.problems else "::notice::" + f"{len(v.rules)} rule(s) valid"
    if fmt == "junit":
        cases = []
        for name in v.files():
            mine = [p for p in v.problems if Path(p.file).resolve() == Path(name).resolve()]
            cases.append(Case("rules validate", Path(name).name, str(Path(name).parent), file=name,
                              failure=mine[0].message if mine else None,
                              detail="\n".join(p.text() for p in mine)))
        known = {str(Path(n).resolve()) for n in v.files()}
        cases += [Case("rules validate", p.file, "settings", failure=p.message, detail=p.text())
                  for p in v.problems if str(Path(p.file).resolve()) not in known]
        return junit("pacsguard rules validate", cases)
    return "\n".join(p.text() for p in v.problems)
