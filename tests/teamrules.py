"""A team's own rules folder, written outside the pack for a test: one custom rule on a field no
pack rule uses (observer.hostname: its filter and its entity), its scenarios and its lock."""

from __future__ import annotations

from pathlib import Path

from pacsguard.rules.lock import write_lock
from pacsguard.rules.model import load_rules

SIGNAL = "team-ws-deletes"
RULE = """\
id: 3f0c8a52-7d61-4c1e-9a0b-6f5e2d4c1b90
name: Study deleted on a reading workstation
signal: team-ws-deletes
version: 1
created: '2026-12-01'
updated: '2026-12-01'
maturity: experimental
author: radiology SOC
description: A study is deleted from a reading workstation (ws-*), which never deletes studies here.
severity: medium
risk_score: 50
mitre:
- {tactic_id: TA0040, tactic: Impact, technique_id: T1485, technique: Data Destruction}
data_sources: [generic]
false_positives: [A workstation re-imaged by IT]
guide:
  triage: Who was logged in on the workstation, and was a deletion requested?
  contain: Take the workstation off the PACS until it is understood.
  preserve: Export the deletion events of the host.
  scope: Which studies were deleted from which hosts?
  reset: Restore the studies from the archive copy.
schedule: 1m
detection:
  type: event
  entity: observer.hostname
  filter:
    actions: [study-delete]
    query: 'observer.hostname:ws-* AND NOT user.roles:pacs-admin'
"""
SCENARIO = """\
signal: team-ws-deletes
cases:
  - name: a deletion on a reading workstation fires
    events:
      - {at: -1m, action: study-delete, user: alice, extra: {host: ws-0719}}
    fires: [ws-0719]
  - name: a deletion on a server does not
    events:
      - {at: -1m, action: study-delete, user: bob, extra: {host: srv-0719}}
    fires: []
  - name: an administrator's deletion on a workstation does not
    events:
      - {at: -1m, action: study-delete, user: carol, roles: [pacs-admin], extra: {host: ws-0720}}
    fires: []
"""


def team_folder(root: Path) -> Path:
    folder = root / "team-rules"
    (folder / "scenarios").mkdir(parents=True)
    (folder / "impact_study_delete_on_workstation.yml").write_text(RULE)
    (folder / "scenarios" / "team-ws-deletes.yaml").write_text(SCENARIO)
    write_lock(load_rules(folder, custom=True), folder)
    return folder

# A Sigma detection rule (valid Sigma) that `rules import` turns into a custom rule.
SIGMA_IN = """\
title: Study deleted by a service account
id: 0b7f8a11-2c3d-4e5f-8a9b-0c1d2e3f4a5b
status: experimental
description: A service account deletes a study, which service accounts here never do.
author: radiology SOC
date: 2026-12-01
tags: [attack.impact, attack.t1485]
logsource: {product: pacs, service: audit}
detection:
  selection:
    event.action: study-delete
    user.roles: service-account
  filter_test:
    observer.hostname: test-pacs
  condition: selection and not filter_test
falsepositives: [A cleanup job run by hand]
level: high
"""
