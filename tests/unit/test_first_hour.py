"""What a newcomer reads in the first hour (issue 21): help, hints and messages, no cluster needed."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock

import pytest
from pacsguard.cli import app
from pacsguard.core.settings import load_settings
from pacsguard.engines.core import render_mustache
from pacsguard.rules.compiler import message_template, rules_folder
from pacsguard.rules.model import load_rules
from pacsguard.services.watch import _number
from typer.testing import CliRunner


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"PACSGUARD_URL": ""}, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_a_node_that_is_down_gets_the_command_that_starts_it() -> None:
    port = free_port()
    code, _, err = invoke("--url", f"http://127.0.0.1:{port}", "status")
    assert code == 1
    assert f"cannot reach http://127.0.0.1:{port}: connection refused" in err
    assert f"pacsguard up --port {port}" in err and len(err.strip().splitlines()) == 1


def test_the_hint_is_only_for_the_local_node() -> None:
    from pacsguard.core.connection import unreachable_hint

    assert "make up" in unreachable_hint("http://127.0.0.1:9200")
    assert "make up" in unreachable_hint("http://localhost:9200")
    assert "pacsguard up --port 9231" in unreachable_hint("http://127.0.0.1:9231")
    assert unreachable_hint("https://opensearch.example.org:9200") == ""
    assert unreachable_hint("https://127.0.0.1:9200") == ""  # the local node speaks http: this is another cluster


def test_counts_print_as_integers() -> None:
    assert _number(9.0) == 9 and isinstance(_number(9.0), int)
    assert _number(2.5) == 2.5
    assert _number(None) is None
    settings = load_settings(environ={})
    rule = next(r for r in load_rules(rules_folder()) if r.signal == "1a")
    text = render_mustache(message_template(rule, settings), {"ctx": {"newAlerts": [
        {"bucket_keys": "dr.smith", "count": _number(9.0)}]}})
    assert "dr.smith, count 9\n" in text


def test_help_is_not_cut_at_80_columns() -> None:
    _, out, _ = invoke("collect", "--help")
    assert "--max-connections-per-address" in out


def test_respond_help_names_the_alert_form() -> None:
    _, out, _ = invoke("respond", "--help")
    assert "pacsguard respond <alert id>" in out


def test_top_level_help_says_what_the_commands_are_for() -> None:
    _, out, _ = invoke("--help")
    first = out.split("Options")[0]
    for purpose in ("up", "watch", "alerts", "respond", "checklist", "collect", "console"):
        assert purpose in first, purpose


def test_down_says_what_it_stopped() -> None:
    _, out, _ = invoke("down", "--port", str(free_port()))
    assert "console was not running" in out and "watch was not running" in out and "node was not running" in out


def test_a_plugin_zip_maven_central_lacks_is_said_to_be_missing(tmp_path: Path) -> None:
    """`make up` printed `downloading alerting-2.19.6.0.zip` and nothing after it (issue 21, item 3)."""
    from pacsguard.devnode import local

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    recipe = {"opensearch_version": "2.19.6", "maven_repository": f"http://127.0.0.1:{server.server_port}/maven2",
              "plugins": ["org.opensearch.plugin:alerting:{version}.0:zip"]}
    said: list[str] = []
    try:
        with mock.patch.object(local, "cache_root", return_value=tmp_path):
            installed, missing = local._install_plugin_zips(tmp_path, recipe, tmp_path, said.append, None)
    finally:
        server.shutdown()
    assert installed == [] and list(missing) == ["org.opensearch.plugin:alerting:2.19.6.0:zip"]
    assert said[0] == "downloading alerting-2.19.6.0.zip"
    assert said[1] == ("alerting-2.19.6.0.zip: not on 127.0.0.1 (HTTP 404); the node runs without it: "
                       "the pack's engine (pacsguard watch) runs the rules and delivers the alerts")


def test_the_demo_keeps_its_files_in_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pacsguard demo` left an untracked pacsguard-demo/ in the repository (issue 21, item 4)."""
    from pacsguard.services.demo import demo_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert demo_dir(9231) == tmp_path / "pacsguard" / "demo-9231"
    _, out, _ = invoke("demo", "--help")
    assert "pacsguard-demo" not in out and "state dir" in out


def test_the_readme_channel_example_is_a_working_settings_file(tmp_path: Path) -> None:
    import yaml
    from pacsguard.engines.delivery import delivery_problems
    from readme import blocks, section

    example = next(b.text for b in blocks(section("### Alert channels")) if b.lang == "yaml")
    path = tmp_path / "pacsguard.yaml"
    path.write_text(example)
    env = {"PACSGUARD_SOC_WEBHOOK_SECRET": "s" * 16}
    settings = load_settings(path, environ=env)
    assert [c.type for c in settings.notifications.channels] == ["webhook", "smtp"]
    assert [p for c in settings.notifications.channels for p in delivery_problems(c, env)] == []
    assert yaml.safe_load(example)["routing"]["default_owner"] == settings.routing.default_owner


def test_up_prints_the_burst_of_the_readme_quick_start() -> None:
    import re

    from pacsguard.cli import DEFAULT_LOCAL_URL, burst_command
    from readme import blocks, section

    readme = next(b.text for b in blocks(section("## Quick start")) if "curl" in b.text)
    printed = burst_command(DEFAULT_LOCAL_URL, "logs-pacs.audit-default")

    def curl(text: str) -> str:
        found = re.search(r"curl .*?\}\"\}'", " ".join(text.replace("\\\n", " ").split()))
        assert found, text
        return found[0]

    assert curl(printed) == curl(readme)
