"""Every rule an installation runs: the pack's (detections/) and the team's own folders
(settings rules.folders), with the site's per-rule overrides (settings rules.overrides) applied.

A custom rule is validated with the same schema and vocabulary, compiled, installed, locked
(its folder's rules.lock.yaml) and uninstalled with the pack, under an id of its own
(`<scope>-rule-<its signal>`); it may not reuse a pack rule's id or signal.
"""

from __future__ import annotations

from pathlib import Path

from pacsguard.core.content import content_path
from pacsguard.core.settings import Settings
from pacsguard.rules.model import RISK_RANGES, Rule, RuleError, load_rule_sets


def pack_folder() -> Path:
    return content_path("detections")


def rule_folders(settings: Settings) -> list[tuple[Path, bool]]:
    """(folder, custom) of every rules folder, the pack's first."""
    return [(pack_folder(), False)] + [(f.path, True) for f in settings.rules.folders]


def scenario_folders(settings: Settings) -> list[Path]:
    """The scenario folders: the pack's, then each custom folder's (default <folder>/scenarios)."""
    return [pack_folder() / "scenarios"] + [f.scenarios or f.path / "scenarios" for f in settings.rules.folders]


def overridden(rule: Rule, settings: Settings) -> Rule:
    """The rule as this site runs it: enabled, severity (risk score moved into its range) and schedule
    from rules.overrides (thresholds and owner are applied where they are read)."""
    o = settings.rules.overrides.get(rule.signal)
    if o is None:
        return rule
    update: dict[str, object] = {}
    if o.enabled is not None:
        update["enabled"] = o.enabled
    if o.schedule is not None:
        update["schedule"] = o.schedule
    if o.severity is not None and o.severity != rule.severity:
        low, high = RISK_RANGES[o.severity]
        update["severity"] = o.severity
        update["risk_score"] = min(max(rule.risk_score, low), high)
    return rule.model_copy(update=update) if update else rule


def all_rules(settings: Settings, overrides: bool = True) -> list[Rule]:
    """The pack's rules and the team's, overrides applied (overrides=False: as the files say)."""
    rules = load_rule_sets(rule_folders(settings))
    unknown = set(settings.rules.overrides) - {r.signal for r in rules}
    if unknown:
        raise RuleError(f"settings rules.overrides names no rule: {', '.join(sorted(unknown))} "
                        f"(rules: {', '.join(r.signal for r in rules)})")
    return [overridden(r, settings) for r in rules] if overrides else rules


def override_lines(settings: Settings) -> list[str]:
    """What each override changes, one line per rule (shown by `plan`)."""
    out = []
    for signal, o in sorted(settings.rules.overrides.items()):
        parts = [f"{k}={v}" for k, v in o.model_dump(exclude_none=True, exclude={"thresholds"}).items()]
        parts += [f"thresholds.{k}={v}" for k, v in o.thresholds.items()]
        out.append(f"rule {signal}: {', '.join(parts) or 'no change'}")
    return out
