"""Settings precedence, validation messages, and secrets that never print (no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import load_settings


def test_defaults_hold_the_design_thresholds() -> None:
    t = load_settings(environ={}).thresholds
    assert (t.login_failures_per_user, t.login_failures_per_user_window) == (8, "10m")
    assert (t.login_failures_per_ip, t.failures_before_success) == (20, 5)
    assert (t.bulk_export_studies, t.bulk_export_window) == (15, "30m")
    assert (t.share_links, t.share_links_window, t.new_external_recipients) == (10, "30m", 5)
    assert t.profile_history_window == "90d" and t.escalation_window == "60m"


def test_user_file_then_env_then_overrides(tmp_path: Path) -> None:
    user = tmp_path / "site.yaml"
    user.write_text("namespace: radiology\nthresholds:\n  bulk_export_studies: 25\ncluster:\n  url: https://os:9200\n")
    s = load_settings(user, environ={"PACSGUARD_THRESHOLDS__BULK_EXPORT_STUDIES": "30"})
    assert s.namespace == "radiology" and s.cluster.url == "https://os:9200"
    assert s.thresholds.bulk_export_studies == 30
    assert s.thresholds.share_links == 10  # untouched defaults survive the merge
    assert s.index("events_data_stream") == "logs-pacs.audit-radiology"
    assert s.index("failures") == "pacsguard-failures-radiology"
    s = load_settings(user, overrides={"namespace": "cli"}, environ={"PACSGUARD_NAMESPACE": "env"})
    assert s.namespace == "cli"


def test_tls_verification_is_on_by_default() -> None:
    assert load_settings(environ={}).cluster.verify_tls is True


def test_password_never_prints(tmp_path: Path) -> None:
    s = load_settings(environ={"PACSGUARD_CLUSTER__PASSWORD": "hunter2-very-secret"})
    assert "hunter2-very-secret" not in repr(s) + str(s) + str(s.model_dump())
    pw = tmp_path / "pw"
    pw.write_text("from-a-file\n")
    s = load_settings(overrides={"cluster": {"password_file": str(pw)}}, environ={})
    secret = s.cluster.resolved_password()
    assert secret is not None and secret.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(s)


def test_bad_values_are_named(tmp_path: Path) -> None:
    with pytest.raises(PacsguardError, match=r"thresholds\.bulk_export_window: .*bad duration '30 minutes'"):
        load_settings(overrides={"thresholds": {"bulk_export_window": "30 minutes"}}, environ={})
    with pytest.raises(PacsguardError, match=r"thresholds\.login_failures_per_user: .*greater than or equal to 1"):
        load_settings(environ={"PACSGUARD_THRESHOLDS__LOGIN_FAILURES_PER_USER": "0"})
    with pytest.raises(PacsguardError, match=r"thresholds\.unknown_knob: Extra inputs are not permitted"):
        load_settings(overrides={"thresholds": {"unknown_knob": 1}}, environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("cluster:\n  url: [unclosed\n")
    with pytest.raises(PacsguardError, match=r"broken\.yaml:3: invalid YAML"):
        load_settings(broken, environ={})
