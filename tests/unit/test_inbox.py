"""The local inbox: where the pack's engine delivers when no channel is configured (no cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pacsguard.core.settings import load_settings
from pacsguard.engines.delivery import AlertMessage, deliver


def test_the_inbox_is_a_jsonl_file_under_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pacsguard.engines.channels.inbox import inbox_channel, read_inbox

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    settings = load_settings(environ={})
    channel = inbox_channel(settings)
    assert channel.name == "inbox"
    assert channel.path == tmp_path / "pacsguard" / "inbox-pacsguard-default.jsonl"
    message = AlertMessage("[pacsguard] HIGH: 1a Failed logins", "Entity (user.name): dr.smith, count 9",
                           {"id": "pg-1", "rule": {"signal": "1a"}, "entity": {"value": "dr.smith"}})
    first = deliver(channel, message, delivery_id="pg-1.new0.inbox")
    assert first.ok and first.attempts == 1 and first.status == "written"
    again = deliver(channel, message, delivery_id="pg-1.new0.inbox")  # a restarted watch sends it again
    assert again.ok and again.status == "already there"
    deliver(channel, AlertMessage("second", "text", {"id": "pg-2"}), delivery_id="pg-2.new0.inbox")
    lines = channel.path.read_text().splitlines()
    assert len(lines) == 2
    entry = json.loads(lines[0])
    assert entry["delivery_id"] == "pg-1.new0.inbox" and entry["subject"].startswith("[pacsguard] HIGH")
    assert entry["alert"]["entity"]["value"] == "dr.smith" and entry["at"]
    assert [e["alert"]["id"] for e in read_inbox(channel.path)] == ["pg-1", "pg-2"]
    assert oct(channel.path.stat().st_mode & 0o777) == "0o600"  # alert texts name accounts: not world-readable


def test_an_unwritable_inbox_is_a_recorded_failure(tmp_path: Path) -> None:
    from pacsguard.engines.channels.inbox import inbox_at

    blocker = tmp_path / "file"
    blocker.write_text("")
    result = deliver(inbox_at(blocker / "inbox.jsonl"), AlertMessage("s", "t", {}), delivery_id="pg-3.new0.inbox")
    assert not result.ok and result.reason == "permanent" and str(blocker) in (result.error or "")


def test_the_inbox_is_built_in_not_a_settings_channel() -> None:
    with pytest.raises(Exception, match="inbox is built in"):
        load_settings(overrides={"notifications": {"channels": [{"name": "mine", "type": "inbox"}]}}, environ={})
