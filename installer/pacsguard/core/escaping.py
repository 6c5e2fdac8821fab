"""Values from senders made safe where they go: a terminal (or log) line, and a URL path segment.

An event value reaches an analyst's terminal (`alerts list`, `alerts show`), the
watch and collector logs, and the paths of requests the pack sends. Raw, a
title-setting escape sequence (``ESC ]0;...BEL``) rewrites the terminal, a CR
overwrites the line it is on, a LF forges a log line, and a ``?`` or ``/`` in an
id changes the request (issue 16, item 8). One helper for each place:

- ``terminal_safe``: C0 and C1 control characters, DEL and the Unicode
  bidirectional overrides become visible escapes (``\\x1b``, ``\\r``, ``\\n``,
  ``\\u202e``); with ``keep_newlines`` the LF of a multi-line text the pack
  itself wrote stays.
- ``path_segment``: the value percent-encoded as one path segment (``/``,
  ``?``, ``#``, ``%`` and the rest included; ``.`` and ``..`` encoded too).
"""

from __future__ import annotations

import logging
import re
import sys
from urllib.parse import quote

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_BUT_LF = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def terminal_safe(value: object, keep_newlines: bool = False) -> str:
    """The value as text that cannot move the cursor, change the terminal or start a new line."""
    text = "" if value is None else str(value)
    return (_UNSAFE_BUT_LF if keep_newlines else _UNSAFE).sub(_escape, text)


def path_segment(value: object) -> str:
    """The value as one URL path segment: ``/_doc/{path_segment(id)}`` cannot become another path or a query."""
    encoded = quote(str(value), safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


class SafeLogFormatter(logging.Formatter):
    """Log lines whose message cannot carry control characters (a traceback keeps its own lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().formatMessage(record))


def configure_logging(level: int, fmt: str = logging.BASIC_FORMAT) -> None:
    """stderr logging for the long-running commands (collect, watch), through SafeLogFormatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeLogFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
