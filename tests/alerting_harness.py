"""Builds and runs the Alerting/Notifications model harness (alerting_models/AlertingModels.java).

The Alerting and Notifications plugins cannot run on the test node (Maven Central has no
zips of them), but their model classes and request validation live in
org.opensearch:common-utils, which Maven Central has. The harness parses each body with
those classes the way the plugins' REST handlers do and runs the request's validate().

Everything it needs comes from Maven Central through the dev node's download cache
(pacsguard.devnode.local.fetch, under the same cache root): OpenSearch's own lib/ jars are
taken from the distribution zip the dev node is built from, the rest is listed in
alerting_models/classpath.yaml. The JDK is the one the dev node uses (local.ensure_java);
it must have javac. The compiled classes are cached by a hash of the source and classpath.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pacsguard.core.errors import PacsguardError
from pacsguard.devnode import local

HARNESS_DIR = Path(__file__).resolve().parent / "alerting_models"
SOURCE = HARNESS_DIR / "AlertingModels.java"
CLASSPATH_FILE = HARNESS_DIR / "classpath.yaml"
MAIN_CLASS = "AlertingModels"
# The kinds the harness knows, as packobjects names them.
KINDS = ("monitor", "notification_channel")


class HarnessError(PacsguardError):
    """The harness could not be built or did not answer."""


@dataclass(frozen=True)
class Verdict:
    """What the plugins' model classes said about one body."""

    kind: str
    label: str
    ok: bool
    stage: str = ""
    status: int = 0
    error: str = ""
    cause: str = ""
    stored: dict[str, Any] | None = None
    deprecations: tuple[str, ...] = ()

    def summary(self) -> str:
        if self.ok:
            return f"{self.kind} {self.label}: OK"
        return f"{self.kind} {self.label}: refused at {self.stage} (HTTP {self.status}): {self.error}"


@dataclass
class Harness:
    java: Path
    classpath: list[Path]
    timings: dict[str, float] = field(default_factory=dict)

    def check(self, objects: Iterable[tuple[str, str, dict[str, Any]]]) -> list[Verdict]:
        """Check (kind, label, body) triples in one JVM run; one verdict per object, in order."""
        lines = []
        for kind, label, body in objects:
            if kind not in KINDS:
                raise ValueError(f"unknown kind {kind!r}; the harness checks {', '.join(KINDS)}")
            if any(c in label for c in "\t\r\n"):
                raise ValueError(f"label {label!r} holds a tab or line break")
            lines.append(f"{kind}\t{label}\t{json.dumps(body, separators=(',', ':'))}")
        started = time.monotonic()
        # A short-lived JVM: the C1 compiler alone and the serial GC start faster (about 1 s of 5).
        cmd = [str(self.java), "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
               "-cp", ":".join(str(p) for p in self.classpath), MAIN_CLASS]
        proc = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True,
                              timeout=600, check=False)
        self.timings["run"] = time.monotonic() - started
        if proc.returncode != 0:
            raise HarnessError(f"{MAIN_CLASS} exited with code {proc.returncode}:\n{proc.stderr.strip()[-3000:]}")
        verdicts = []
        for line in proc.stdout.splitlines():
            raw = json.loads(line)
            stored = json.loads(raw["stored"]) if raw.get("stored") else None
            verdicts.append(Verdict(raw["kind"], raw["label"], raw["ok"], raw.get("stage", ""),
                                    raw.get("status", 0), raw.get("error", ""), raw.get("cause", ""),
                                    stored, tuple(raw.get("deprecations", []))))
        if len(verdicts) != len(lines):
            raise HarnessError(f"{MAIN_CLASS} answered {len(verdicts)} of {len(lines)} objects; "
                               f"stderr:\n{proc.stderr.strip()[-3000:]}")
        return verdicts


def harness_cache() -> Path:
    return local.cache_root() / "alerting-models"


def artifacts() -> list[str]:
    with CLASSPATH_FILE.open() as fh:
        listed: list[str] = yaml.safe_load(fh)["artifacts"]
    return listed


def opensearch_lib(recipe: dict[str, Any], progress: local.Progress) -> list[Path]:
    """OpenSearch's lib/ jars, from the distribution zip the dev node is built from (unpacked once)."""
    version = recipe["opensearch_version"]
    target = harness_cache() / f"opensearch-{version}-lib"
    if not target.is_dir():
        dist = local.fetch(recipe["distribution"], version, recipe["maven_repository"], progress)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".lib-", dir=target.parent))
        progress(f"unpacking lib/ of {dist.name}")
        with zipfile.ZipFile(dist) as zf:
            for member in zf.namelist():
                parts = member.split("/")
                if len(parts) == 3 and parts[1] == "lib" and parts[2].endswith(".jar"):
                    (staging / parts[2]).write_bytes(zf.read(member))
        if not any(staging.glob("opensearch-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            raise HarnessError(f"{dist} holds no lib/opensearch-*.jar")
        try:
            staging.rename(target)
        except OSError:  # another run unpacked it first
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(target.glob("*.jar"))


def compile_harness(javac: Path, classpath: list[Path], progress: local.Progress) -> Path:
    """Compile AlertingModels.java once per (source, classpath); returns the classes folder."""
    key = hashlib.sha256(SOURCE.read_bytes())
    for jar in classpath:
        key.update(jar.name.encode())
    target = harness_cache() / f"classes-{key.hexdigest()[:16]}"
    if (target / f"{MAIN_CLASS}.class").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".classes-", dir=target.parent))
    progress(f"compiling {SOURCE.name}")
    proc = subprocess.run([str(javac), "-encoding", "UTF-8", "-d", str(staging),
                           "-cp", ":".join(str(p) for p in classpath), str(SOURCE)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise HarnessError(f"javac {SOURCE} failed:\n{(proc.stdout + proc.stderr).strip()[-3000:]}")
    try:
        staging.rename(target)
    except OSError:  # another run compiled it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def prepare(progress: local.Progress | None = None) -> Harness:
    """Download (or reuse) the classpath, compile (or reuse) the harness; fails with a clear error."""
    progress = progress or (lambda _: None)
    recipe = local.load_recipe()
    timings: dict[str, float] = {}
    started = time.monotonic()
    java_home = local.ensure_java(recipe, progress)
    javac = java_home / "bin" / "javac"
    if not javac.exists():
        raise HarnessError(f"{java_home} has no javac (a JRE only); the Alerting model harness needs a JDK: "
                           f"install {recipe['jdk_package']} or point OPENSEARCH_JAVA_HOME at a JDK "
                           f"{recipe['java']['min']}")
    timings["java"] = time.monotonic() - started
    started = time.monotonic()
    jars = opensearch_lib(recipe, progress)
    jars += [local.fetch(coord, recipe["opensearch_version"], recipe["maven_repository"], progress)
             for coord in artifacts()]
    timings["download"] = time.monotonic() - started
    started = time.monotonic()
    classes = compile_harness(javac, jars, progress)
    timings["compile"] = time.monotonic() - started
    return Harness(java_home / "bin" / "java", [classes, *jars], timings)


def _paths(node: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{prefix}/{key}"
            yield from _paths(value, f"{prefix}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, f"{prefix}/{i}")


def dropped_fields(verdict: Verdict, sent: dict[str, Any]) -> list[str]:
    """Fields of a body that the plugin parsed without error but does not keep (it ignores them).

    The search request inside a monitor is left out: core OpenSearch re-renders it in its
    own canonical form (aggs -> aggregations, gte -> from), so its keys differ by design.
    """
    if verdict.stored is None:
        return []
    if verdict.kind == "monitor":
        sent_part, stored_part = sent, verdict.stored.get("monitor", {})
    else:
        sent_part, stored_part = sent.get("config", {}), verdict.stored
    kept = set(_paths(stored_part))
    return [p for p in _paths(sent_part) if p not in kept and "/search/query/" not in p]
