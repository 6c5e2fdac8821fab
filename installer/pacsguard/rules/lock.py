"""The rule version lock: a content hash per rule, so a rule's version bumps whenever what it does changes.

detections/rules.lock.yaml maps each rule id to the version and hash last
locked. `pacsguard rules lock` rewrites it; validation (and CI) refuses a rule
whose content changed while its version did not, and a lock left behind.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pacsguard.rules.model import Rule, RuleError

LOCK_FILE = "rules.lock.yaml"


def lock_path(folder: Path) -> Path:
    return folder / LOCK_FILE


def read_lock(folder: Path) -> dict[str, dict[str, object]]:
    path = lock_path(folder)
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise RuleError(f"{path}:1: the lock is a mapping of rule id to version and hash")
    return {str(k): dict(v) for k, v in data.items()}


def lock_problems(rules: list[Rule], folder: Path) -> list[str]:
    """One `path:line: version: message` per rule out of step with the lock."""
    lock = read_lock(folder)
    problems = []
    for rule in rules:
        where = f"{rule.path or folder}:1: version"
        entry = lock.get(str(rule.id))
        if entry is None:
            problems.append(f"{where}: rule {rule.id} is not in {LOCK_FILE}: run `pacsguard rules lock`")
            continue
        locked_version, locked_hash = int(str(entry.get("version"))), str(entry.get("hash"))
        if rule.content_hash() != locked_hash and rule.version <= locked_version:
            problems.append(f"{where}: the rule changed since version {locked_version} was locked: "
                            f"bump version to {locked_version + 1} (and updated), then run `pacsguard rules lock`")
        elif rule.content_hash() != locked_hash or rule.version != locked_version:
            problems.append(f"{where}: {LOCK_FILE} is behind (locked v{locked_version}, rule v{rule.version}): "
                            "run `pacsguard rules lock`")
    known = {str(r.id) for r in rules}
    problems += [f"{lock_path(folder)}:1: {rule_id}: locked rule no longer exists: run `pacsguard rules lock`"
                 for rule_id in lock if rule_id not in known]
    return problems


def write_lock(rules: list[Rule], folder: Path) -> Path:
    path = lock_path(folder)
    body = {str(r.id): {"signal": r.signal, "version": r.version, "hash": r.content_hash()}
            for r in sorted(rules, key=lambda r: r.signal)}
    path.write_text("# Rule version lock (pacsguard rules lock): the version bumps when the hash changes.\n"
                    + yaml.safe_dump(body, sort_keys=False))
    return path
