"""Global options may stand after the command, as users type them (no cluster)."""

from __future__ import annotations

from pacsguard.cli import hoist_global_options


def test_global_options_move_in_front_of_the_command() -> None:
    assert hoist_global_options(["status", "--json"]) == ["--json", "status"]
    assert hoist_global_options(["plan", "--url", "https://os:9200", "--all"]) == ["--url", "https://os:9200", "plan", "--all"]
    assert hoist_global_options(["install", "--namespace=radiology", "-v"]) == ["--namespace=radiology", "-v", "install"]
    assert hoist_global_options(["cluster", "up", "--port", "9300"]) == ["cluster", "up", "--port", "9300"]
    assert hoist_global_options(["respond", "--", "--json"]) == ["respond", "--", "--json"]
