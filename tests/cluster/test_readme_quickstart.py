"""The README's quick start, run as written, on a fresh node: the alert it shows arrives (issue 21).

The commands are the `sh` blocks under "## Quick start" in README.md, in order, run by bash
the way a user pastes them. Only what a user's environment sets differs: the node's port
(PACSGUARD_NODE_PORT, which `make up` / `pacsguard up` read), the CLI's cluster
(PACSGUARD_URL), the console port, the state dir (XDG_STATE_HOME), and the URL typed into
curl, which names this node instead of 127.0.0.1:9200. `make up` runs the Makefile's
`up` recipe without its `deps` prerequisite: the environment under test is already the
one `make test` installed (and re-running pip here would reinstall the package the
rest of the session is running). The expected output is the README's `text` block:
every row it shows must be there (but for the alert id and start time), with the
count line and the inbox line, and the inbox file must hold the alert.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacsguard.core.connection import Cluster
from pacsguard.services import background
from pacsguard.services.console import process as console_process
from pacsguard.services.install import uninstall
from readme import README, blocks, make_recipe, section
from testnode import SessionNode, make_settings

REPO = README.parent
DEFAULT_URL = "http://127.0.0.1:9200"
VOLATILE = {"id", "start"}  # differ on every run
INBOX_LINE = "no channel configured: the pack's engine delivers alerts to the inbox "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_curl() -> None:
    if shutil.which("curl"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("the quick start needs curl (README: a machine with Python, make and curl); "
                    "not installed, and installing it needs root and apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "curl"]):
        subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=600)
    assert shutil.which("curl"), "apt-get install curl failed"


def table(text: str) -> list[dict[str, str]]:
    """The rows of a table as `pacsguard alerts list` prints it (columns spanned by its dashed line)."""
    lines = text.splitlines()
    dashes = next((i for i, line in enumerate(lines) if re.fullmatch(r"-+( +-+)*", line)), None)
    assert dashes, f"no table (no alert arrived?) in:\n{text}"
    spans = [m.span() for m in re.finditer(r"-+", lines[dashes])]

    def cut(line: str) -> list[str]:
        ends = [s for s, _ in spans[1:]] + [None]
        return [line[s:e].strip() for (s, _), e in zip(spans, ends)]

    header = cut(lines[dashes - 1])
    rows = []
    for line in lines[dashes + 1:]:
        if not line.strip():
            break
        rows.append(dict(zip(header, cut(line))))
    return rows


def as_typed(command: str, url: str) -> str:
    """A block as the user runs it: `make <target>` is the target's recipe; curl names this node."""
    out = []
    for line in command.splitlines():
        make = re.fullmatch(r"\s*make (\w+)\s*(#.*)?", line)
        out += make_recipe(make[1]) if make else [line]
    return "\n".join(out).replace(DEFAULT_URL, url)


@pytest.fixture
def quickstart_env(test_node: SessionNode, tmp_path: Path) -> Iterator[dict[str, str]]:
    if test_node.port is None:
        pytest.skip("the quick start runs `make up` on the local node; PACSGUARD_TEST_URL names another cluster")
    ensure_curl()
    shim = tmp_path / "bin"  # `pacsguard` is this checkout's CLI on this interpreter, whatever PATH holds
    shim.mkdir()
    (shim / "pacsguard").write_text(f"#!/bin/sh\nexec {sys.executable} -m pacsguard.cli \"$@\"\n")
    (shim / "pacsguard").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSGUARD_")}
    env.update(PATH=f"{shim}:{env.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join([str(REPO / "installer"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PACSGUARD_NODE_PORT=str(test_node.port), PACSGUARD_URL=test_node.url,
               PACSGUARD_CONSOLE_PORT=str(free_port()), XDG_STATE_HOME=str(tmp_path / "state"))
    try:
        yield env
    finally:
        background.stop(test_node.port)
        console_process.stop(test_node.port)
        settings = make_settings(test_node.url, "pacsguard", "default")
        uninstall(Cluster.connect(settings.cluster), settings, purge=True)


def test_the_readme_quick_start_raises_the_alert_it_shows(quickstart_env: dict[str, str], test_node: SessionNode,
                                                           tmp_path: Path) -> None:
    text = section("## Quick start")
    commands = [b.text for b in blocks(text) if b.lang == "sh"]
    expected = next(b.text for b in blocks(text) if b.lang == "text")
    assert len(commands) >= 3, text
    outputs = []
    for command in commands:
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", as_typed(command, test_node.url)],
                              env=quickstart_env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, f"$ {command}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)

    # `make up`: says Alerting is absent where it is, where alerts go, and what to try next
    assert "Alerts go to: the local inbox" in outputs[0] and "Next steps:" in outputs[0], outputs[0]
    # the burst: every post answered 201 (the README says so)
    assert outputs[1].split() == ["201"] * 9, outputs[1]

    want_rows = table(expected)
    got_rows = table(outputs[-1])
    assert want_rows, expected
    for want in want_rows:
        fixed = {k: v for k, v in want.items() if k not in VOLATILE}
        assert any(fixed.items() <= row.items() for row in got_rows), f"{fixed} not in\n{outputs[-1]}"
    counts = [line for line in expected.splitlines() if re.fullmatch(r"\d+ alert\(s\).*", line)]
    assert counts and counts[0] in outputs[-1].splitlines(), outputs[-1]

    # the inbox the README names holds the alert
    want_inbox = next(line for line in expected.splitlines() if line.startswith(INBOX_LINE))
    got_inbox = next(line for line in outputs[-1].splitlines() if line.startswith(INBOX_LINE))
    path = Path(got_inbox[len(INBOX_LINE):])
    assert path == Path(quickstart_env["XDG_STATE_HOME"]) / "pacsguard" / Path(want_inbox[len(INBOX_LINE):]).name
    assert path.name in text  # the prose names the file too
    alert_ids = {row["id"] for row in got_rows}
    deadline = time.monotonic() + 30  # delivery runs in a worker, a moment after the alert is stored
    while True:
        entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if {e["alert"]["id"] for e in entries} & alert_ids or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {e["alert"]["id"] for e in entries} & alert_ids, (path, entries)
    assert any("dr.smith, count 9" in e["text"] for e in entries), entries
