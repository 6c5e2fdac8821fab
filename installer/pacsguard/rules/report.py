"""Rule CI output: problems as `path:line: message`, GitHub annotations, JUnit XML.

Pure rendering (no cluster): `rules validate --format` and `test-rules --junit` use it, so a
team's CI (docs/ci.md) reads the same results a person reads in the terminal.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

_WHERE = re.compile(r"^(?P<file>[^\n]*?):(?P<line>\d+): (?P<message>.*)$")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str

    def text(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def problems_of(text: str) -> list[Problem]:
    """RuleError text (one `path:line: message` a line) as problems; a line without a place keeps
    the message under the file '-'."""
    out = []
    for raw in text.splitlines():
        m = _WHERE.match(raw)
        out.append(Problem(m["file"], int(m["line"]), m["message"]) if m else Problem("-", 1, raw))
    return out


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github(problems: list[Problem]) -> str:
    """GitHub Actions workflow commands: one `::error file=...,line=...::message` per problem."""
    return "\n".join(f"::error file={_escape_property(p.file)},line={p.line}::{_escape_data(p.message)}"
                     for p in problems)


@dataclass(frozen=True)
class Case:
    """One JUnit test case: passed when failure is None."""

    suite: str
    name: str
    classname: str
    failure: str | None = None
    detail: str = ""
    seconds: float = 0.0
    file: str = ""


def junit(name: str, cases: list[Case]) -> str:
    """JUnit XML: one <testsuite> per suite, one <testcase> per case, failures with their message."""
    root = ET.Element("testsuites", name=name, tests=str(len(cases)),
                      failures=str(sum(c.failure is not None for c in cases)))
    suites: dict[str, ET.Element] = {}
    for case in cases:
        suite = suites.get(case.suite)
        if suite is None:
            suite = suites[case.suite] = ET.SubElement(root, "testsuite", name=case.suite)
        attrs: dict[str, Any] = {"name": case.name, "classname": case.classname, "time": f"{case.seconds:.3f}"}
        if case.file:
            attrs["file"] = case.file
        el = ET.SubElement(suite, "testcase", **attrs)
        if case.failure is not None:
            failure = ET.SubElement(el, "failure", message=case.failure)
            failure.text = case.detail or case.failure
    for suite in suites.values():
        cases_in = suite.findall("testcase")
        suite.set("tests", str(len(cases_in)))
        suite.set("failures", str(sum(1 for c in cases_in if c.find("failure") is not None)))
        suite.set("errors", "0")
        suite.set("skipped", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
