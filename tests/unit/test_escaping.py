"""Issue 16, item 8: control characters never reach a terminal or a log raw; ids never change a URL."""

from __future__ import annotations

import io
import logging

from pacsguard.cli import table
from pacsguard.core.escaping import SafeLogFormatter, path_segment, terminal_safe

TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title
CSI = "\x1b[2J\x1b[H"  # clears the screen
FORGED = "alice\r\n2026-12-01 ALERT forged line"


def test_terminal_safe_escapes_c0_c1_del_and_bidi_controls_visibly() -> None:
    text = terminal_safe(f"user {TITLE}{CSI} \x9b31m \x7f \u202eevil \t{FORGED}")
    assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in text)
    assert "\\x1b]0;pwned\\x07" in text and "\\x9b" in text and "\\u202e" in text
    assert "alice\\r\\n2026-12-01" in text and "\\t" in text  # one line, and the reader sees what was there
    assert terminal_safe("Zoë Müller 東京") == "Zoë Müller 東京"  # printable text is untouched
    assert terminal_safe("a\nb\r", keep_newlines=True) == "a\nb\\r"
    assert terminal_safe(None) == ""


def test_path_segment_keeps_an_id_one_segment() -> None:
    assert path_segment("a?pretty=true") == "a%3Fpretty%3Dtrue"
    assert path_segment("../_cluster/settings") == "..%2F_cluster%2Fsettings"
    assert path_segment("x#y z%") == "x%23y%20z%25"
    assert path_segment("..") == "%2E%2E" and path_segment(".") == "%2E"
    assert path_segment("pacsguard-1a-Zm9v_YmFy") == "pacsguard-1a-Zm9v_YmFy"  # plain ids stay readable


def test_cli_tables_keep_one_row_per_alert() -> None:
    rendered = table(["entity", "owner"], [[FORGED + TITLE, None], ["bob", "soc"]])
    lines = rendered.split("\n")
    assert len(lines) == 4 and "\x1b" not in rendered and "\r" not in rendered
    assert lines[2].startswith("alice\\r\\n2026-12-01 ALERT forged line\\x1b]0;pwned\\x07")


def test_log_lines_cannot_carry_escape_sequences_or_forge_lines() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeLogFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("pacsguard.test-escaping")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("tcp from %s: %s", "10.0.0.1", FORGED + TITLE)
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "WARNING tcp from 10.0.0.1: alice\\r\\n2026-12-01 ALERT forged line\\x1b]0;pwned\\x07\n"
