"""Where the pack's content (pack/, pipelines/, detections/, dashboards/) lives.

An installed wheel carries it under pacsguard/content/. A source checkout used
in place (editable install) falls back to the repository root. PACSGUARD_CONTENT
points at another copy, e.g. a team's tuned fork of the rules.
"""

from __future__ import annotations

import os
from pathlib import Path

CONTENT_DIRS = ("pack", "pipelines", "detections", "dashboards")


def content_root() -> Path:
    env = os.environ.get("PACSGUARD_CONTENT")
    if env:
        return Path(env)
    packaged = Path(__file__).resolve().parents[1] / "content"
    if (packaged / "pack").is_dir():
        return packaged
    source = Path(__file__).resolve().parents[3]
    if (source / "pack").is_dir():
        return source
    raise FileNotFoundError("pacsguard content not found: reinstall the package or set PACSGUARD_CONTENT")


def content_path(*parts: str) -> Path:
    return content_root().joinpath(*parts)
