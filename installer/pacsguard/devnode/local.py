"""A local OpenSearch node assembled from Maven Central, for development and CI.

One recipe (pack/local-node.yaml) for both lines: the 2.19 integ-test distribution
only carries transport-netty4, so the modules the pack needs (painless, mustache,
ingest-common, user-agent, geoip, ...), published as plain jars, are laid out as
modules/<name>/ with a descriptor and a security policy; 3.6+ zips bundle them with
their jars and the GeoLite2 databases, and those are used as they are. The result
is cached per resolved-recipe hash outside the work tree. OpenSearch refuses to run
as root, so as root the node runs as a system user.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pacsguard.core.errors import PacsguardError
from pacsguard.core.models import Progress
from pacsguard.devnode import lines

NODE_USER = "pacsguard"
# The node's transport port sits this far above its HTTP port.
TRANSPORT_PORT_OFFSET = 100


OPENSEARCH_MAIN = "org.opensearch.bootstrap.OpenSearch"  # the node's main class, in its command line

def _quiet(_: str) -> None:
    return None


def cache_root() -> Path:
    """Where downloads and assembled nodes live (outside any work tree).

    As root the node runs as an unprivileged user who cannot enter /root, so the
    cache moves to /var/cache/pacsguard there.
    """
    env = os.environ.get("PACSGUARD_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/pacsguard")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pacsguard"


def load_recipe(version: str | None = None) -> dict[str, Any]:
    """The recipe for one node version (lines.chosen_version: the argument, else
    PACSGUARD_OPENSEARCH_VERSION, else the default), with its line's values resolved in:
    opensearch_version, line, java, jdk_package/jdk_pypi, the modules' class names and jars."""
    raw = lines.raw_recipe()
    chosen = lines.chosen_version(version, raw)
    name = lines.line_of(chosen, raw)
    line = raw["lines"][name]
    names = {"version": chosen, "plugin": line["plugin"], **line["deps"]}
    modules = {}
    for module, spec in raw["modules"].items():
        modules[module] = {**spec, "artifact": spec["artifact"].format(**names),
                           "classname": spec["classname"].format(**names),
                           "deps": [dep.format(**names) for dep in spec.get("deps", [])]}
    recipe = {key: value for key, value in raw.items() if key not in ("lines", "default_version")}
    recipe.update(opensearch_version=chosen, line=name, java=line["java"], modules=modules,
                  docker_image=raw["docker_image"].format(version=chosen),
                  jdk_package=line.get("jdk_package"), jdk_hint=line.get("jdk_hint"))
    return recipe


def recipe_hash(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- downloads


def _coordinate_path(coord: str, version: str) -> tuple[str, str]:
    parts = coord.format(version=version).split(":")
    group, artifact, ver = parts[0], parts[1], parts[2]
    ext = parts[3] if len(parts) > 3 else "jar"
    name = f"{artifact}-{ver}.{ext}"
    return f"{group.replace('.', '/')}/{artifact}/{ver}/{name}", name


def fetch(coord: str, version: str, repo: str, progress: Progress = _quiet) -> Path:
    """Download one Maven artifact into the shared download cache (once)."""
    rel, name = _coordinate_path(coord, version)
    target = cache_root() / "downloads" / rel
    if target.exists() and target.stat().st_size > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    url = f"{repo.rstrip('/')}/{rel}"
    progress(f"downloading {name}")
    last: Exception | None = None
    for attempt in range(4):
        try:
            with urllib.request.urlopen(url, timeout=120) as resp:
                tmp = target.with_suffix(target.suffix + ".part")
                with tmp.open("wb") as out:
                    shutil.copyfileobj(resp, out, length=1 << 20)
                tmp.replace(target)
                return target
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise PacsguardError(f"{coord.format(version=version)} is not on {repo} (HTTP 404)") from exc
            last = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            last = exc
        time.sleep(2**attempt)
    raise PacsguardError(f"could not download {url}: {last}")


# ------------------------------------------------------------------- build


@dataclass
class BuildReport:
    home: Path
    cached: bool
    seconds: float
    modules: list[str]
    plugins: list[str]
    missing_plugins: dict[str, str]


def plugin_zip_dir(explicit: Path | str | None = None) -> Path | None:
    """The folder of plugin zips to install (the argument, else PACSGUARD_PLUGIN_ZIPS), or None."""
    chosen = explicit or os.environ.get("PACSGUARD_PLUGIN_ZIPS")
    return Path(chosen).resolve() if chosen else None


def _local_zips(recipe: dict[str, Any], plugin_dir: Path | None) -> dict[str, Path]:
    """The recipe's plugin zips found in plugin_dir, by file name."""
    if plugin_dir is None:
        return {}
    found = {}
    for coord in recipe.get("plugins", []):
        _, name = _coordinate_path(coord, recipe["opensearch_version"])
        if (plugin_dir / name).is_file():
            found[name] = plugin_dir / name
    return found


def node_home(recipe: dict[str, Any], plugin_dir: Path | None = None) -> Path:
    """The assembled node's folder, keyed by everything that changes the node: the recipe and
    the bytes of every local plugin zip it takes (a node built without them is never reused
    for one that needs them, nor one built from other zips)."""
    key = recipe_hash(recipe)
    zips = _local_zips(recipe, plugin_dir)
    if zips:
        digest = hashlib.sha256()
        for name in sorted(zips):
            digest.update(name.encode() + b"\0" + hashlib.sha256(zips[name].read_bytes()).digest())
        key += "-plugins-" + digest.hexdigest()[:12]
    return cache_root() / "nodes" / f"opensearch-{recipe['opensearch_version']}-{key}"


def _descriptor(name: str, spec: dict[str, Any], version: str, java_release: int) -> str:
    lines = [
        f"description={spec['description']}",
        f"version={version}",
        f"name={name}",
        f"classname={spec['classname']}",
        f"java.version={java_release}",
        f"opensearch.version={version}",
        f"extended.plugins={','.join(spec.get('extended_plugins', []))}",
        "has.native.controller=false",
    ]
    return "\n".join(lines) + "\n"


def _install_plugin_zips(home: Path, recipe: dict[str, Any], java_home: Path, progress: Progress,
                         plugin_dir: Path | None) -> tuple[list[str], dict[str, str]]:
    version, repo = recipe["opensearch_version"], recipe["maven_repository"]
    installed: list[str] = []
    missing: dict[str, str] = {}
    local = _local_zips(recipe, plugin_dir)
    for coord in recipe.get("plugins", []):
        _, name = _coordinate_path(coord, version)
        zip_path: Path | None = local.get(name)
        if zip_path is None:
            try:
                zip_path = fetch(coord, version, repo, progress)
            except PacsguardError as exc:
                missing[coord.format(version=version)] = str(exc)
                # said at once: "downloading <zip>" alone reads as if the plugin were installed
                progress(f"{name}: not on {urlsplit(repo).hostname} (HTTP 404); the node runs without it: "
                         "the pack's engine (pacsguard watch) runs the rules and delivers the alerts"
                         if "HTTP 404" in str(exc) else f"{name}: {exc}; the node runs without it")
                continue
        progress(f"installing plugin {name}")
        env = dict(os.environ, OPENSEARCH_JAVA_HOME=str(java_home), JAVA_HOME=str(java_home))
        proc = subprocess.run(
            [str(home / "bin" / "opensearch-plugin"), "install", "--batch", f"file://{zip_path.resolve()}"],
            env=env, capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise PacsguardError(f"opensearch-plugin install {name} failed: {proc.stderr.strip()[-2000:]}")
        installed.append(name)
    return installed, missing


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (waits for it); the kernel drops it if the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build(progress: Progress = _quiet, force: bool = False, plugin_dir: Path | None = None,
          version: str | None = None) -> BuildReport:
    """Assemble the node of `version` (load_recipe: default 2.19.6), or reuse the cached one, and
    return where it is.

    Concurrent runs (two test sessions on a cold cache) build one at a time:
    the second finds the first one's node instead of replacing it under a
    running node."""
    recipe = load_recipe(version)
    plugin_dir = plugin_zip_dir(plugin_dir)
    home = node_home(recipe, plugin_dir)
    marker = home / ".pacsguard-build.json"
    if marker.exists() and not force:
        info = json.loads(marker.read_text())
        return BuildReport(home, True, 0.0, info["modules"], info["plugins"], info["missing_plugins"])
    with _exclusive(cache_root() / "locks" / "build.lock"):
        if marker.exists() and not force:
            info = json.loads(marker.read_text())
            return BuildReport(home, True, 0.0, info["modules"], info["plugins"], info["missing_plugins"])
        return _build(recipe, home, progress, plugin_dir)


def _build(recipe: dict[str, Any], home: Path, progress: Progress, plugin_dir: Path | None) -> BuildReport:
    started = time.monotonic()
    version, repo = recipe["opensearch_version"], recipe["maven_repository"]
    java_home = ensure_java(recipe, progress)
    dist = fetch(recipe["distribution"], version, repo, progress)
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=home.parent))
    progress("unpacking distribution")
    with zipfile.ZipFile(dist) as zf:
        zf.extractall(staging)
    root = next(staging.iterdir())
    for path in (root / "bin").iterdir():
        path.chmod(0o755)
    lib_jars = {p.name for p in (root / "lib").glob("*.jar")}
    for name, spec in recipe["modules"].items():
        mdir = root / "modules" / name
        if mdir.is_dir():  # bundled by the zip (3.6+) with its own jars: adding ours beside them breaks it
            _check_bundled(mdir, spec)
            continue
        mdir.mkdir(parents=True)
        for coord in [spec["artifact"], *spec.get("deps", [])]:
            jar = fetch(coord, version, repo, progress)
            if jar.name not in lib_jars:
                shutil.copy2(jar, mdir / jar.name)
        if spec.get("databases"):
            with zipfile.ZipFile(fetch(spec["databases"], version, repo, progress)) as zf:
                for member in zf.namelist():
                    if member.endswith(".mmdb"):
                        (mdir / Path(member).name).write_bytes(zf.read(member))
        (mdir / "plugin-descriptor.properties").write_text(
            _descriptor(name, spec, version, recipe["java"]["min"])
        )
        if spec.get("policy"):
            body = "\n".join(f"  {line}" for line in spec["policy"])
            (mdir / "plugin-security.policy").write_text("grant {\n" + body + "\n};\n")
    plugins, missing = _install_plugin_zips(root, recipe, java_home, progress, plugin_dir)
    modules = sorted(p.name for p in (root / "modules").iterdir())
    info = {"modules": modules, "plugins": plugins, "missing_plugins": missing, "recipe": recipe_hash(recipe)}
    (root / ".pacsguard-build.json").write_text(json.dumps(info, indent=2))
    if home.exists():
        shutil.rmtree(home)
    root.rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    return BuildReport(home, False, time.monotonic() - started, modules, plugins, missing)


def _check_bundled(mdir: Path, spec: dict[str, Any]) -> None:
    """A module the zip bundles must be the one the recipe expects (its class name)."""
    descriptor = mdir / "plugin-descriptor.properties"
    props = dict(line.split("=", 1) for line in descriptor.read_text().splitlines()
                 if "=" in line and not line.startswith("#")) if descriptor.is_file() else {}
    if props.get("classname") != spec["classname"]:
        raise PacsguardError(f"{descriptor}: the distribution's module has classname {props.get('classname')!r}, "
                             f"the recipe (pack/local-node.yaml) expects {spec['classname']!r}")


# -------------------------------------------------------------------- java

# Where installed JDKs are looked for, after OPENSEARCH_JAVA_HOME and JAVA_HOME.
JVM_DIRS = (Path("/usr/lib/jvm"),)


def _java_release(java: Path) -> int | None:
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False).stderr
    except OSError:
        return None
    for token in out.split('"')[1:2]:
        head = token.split(".")[0]
        return int(head) if head.isdigit() else None
    return None


def java_modules(home: Path) -> set[str]:
    """The modules a Java runtime has (its `release` file, else `java --list-modules`)."""
    release = home / "release"
    if release.is_file():
        for line in release.read_text(errors="replace").splitlines():
            if line.startswith("MODULES="):
                return set(line.split("=", 1)[1].strip('"').split())
    proc = subprocess.run([str(home / "bin" / "java"), "--list-modules"], capture_output=True, text=True,
                          check=False)
    return {line.split("@")[0] for line in proc.stdout.split()}


def _fits(home: Path, java: dict[str, Any]) -> bool:
    binary = home / "bin" / "java"
    release = _java_release(binary) if binary.exists() else None
    if release is None or release < java["min"] or (java["max"] is not None and release > java["max"]):
        return False
    return set(java["modules"]) <= java_modules(home)


def find_java(java: dict[str, Any]) -> Path | None:
    """The first Java home that runs a line (`java` of a resolved recipe: min/max release, modules):
    OPENSEARCH_JAVA_HOME, JAVA_HOME, then the JDKs under JVM_DIRS, whatever their folders are named."""
    candidates = [Path(os.environ[var]) for var in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME") if os.environ.get(var)]
    for folder in JVM_DIRS:
        if folder.is_dir():
            candidates += sorted(p for p in folder.iterdir() if p.is_dir())
    for home in candidates:
        if _fits(home, java):
            return home.resolve()
    return None


def _wanted(java: dict[str, Any]) -> str:
    span = f"{java['min']} or newer" if java["max"] is None else (
        str(java["min"]) if java["min"] == java["max"] else f"{java['min']} to {java['max']}")
    return f"Java {span}" + (f" (with {', '.join(java['modules'])})" if java["modules"] else "")


def java_missing(recipe: dict[str, Any], needed_by: str | None = None) -> str:
    """What to say when no Java fits: which one is needed, and how to get one."""
    how = [f"apt-get install {recipe['jdk_package']}"] if recipe.get("jdk_package") else []
    how.append(recipe.get("jdk_hint") or "any JDK of that release")
    where = ", ".join(["OPENSEARCH_JAVA_HOME", "JAVA_HOME", *map(str, JVM_DIRS)])
    return (f"{needed_by or 'OpenSearch ' + recipe['opensearch_version']} needs {_wanted(recipe['java'])}; "
            f"none found (looked at {where}). Install one: {'; or '.join(how)}; and point "
            f"OPENSEARCH_JAVA_HOME at it if it lies elsewhere.")


def _run_quietly(cmd: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PacsguardError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-1000:]}")


def ensure_java(recipe: dict[str, Any], progress: Progress = _quiet, needed_by: str | None = None) -> Path:
    """A Java the recipe's line runs on: found, else (as root, where the line has a Debian package)
    installed from Debian's packages; else an error saying which JDK to install. The local
    Keycloak uses the default line's (`needed_by` names it in the error)."""
    found = find_java(recipe["java"])
    if found:
        return found
    if recipe.get("jdk_package") and os.geteuid() == 0 and shutil.which("apt-get"):
        progress(f"installing {recipe['jdk_package']} (no {_wanted(recipe['java'])} found)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run_quietly(["apt-get", "update", "-q"], env)
        _run_quietly(["apt-get", "install", "-y", "-q", recipe["jdk_package"]], env)
    else:
        raise PacsguardError(java_missing(recipe, needed_by))
    found = find_java(recipe["java"])
    if not found:
        raise PacsguardError("installed a JDK but it does not fit: " + java_missing(recipe, needed_by))
    return found


def fit_jvm_options(text: str, modules: set[str]) -> str:
    """jvm.options without the `--add-modules=` lines naming a module this Java lacks (a JDK wheel has
    no jdk.incubator.vector; Lucene then runs its scalar code), each left as a comment saying why."""
    out = []
    for line in text.splitlines(keepends=True):
        option = line.strip().split(":", 1)[-1]
        if option.startswith("--add-modules="):
            absent = sorted(set(option.split("=", 1)[1].split(",")) - modules)
            if absent:
                out.append(f"# left out by pacsguard, this Java has no {', '.join(absent)}: {line.lstrip('# ')}")
                continue
        out.append(line)
    return "".join(out)


# ------------------------------------------------------------------ run/stop


@dataclass
class NodeState:
    pid: int
    port: int
    url: str
    home: str
    run_dir: str
    log: str
    version: str = ""  # "" in the state of a node started before versions were recorded

    @classmethod
    def load(cls, path: Path) -> NodeState | None:
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


def run_dir_for(port: int) -> Path:
    return cache_root() / "run" / str(port)


def _state_file(port: int) -> Path:
    return run_dir_for(port) / "node.json"


def pid_runs(pid: int, marker: str) -> bool:
    """Whether ``pid`` is a process whose command line names ``marker`` (a pid can be reused by
    something else): how every service started here (node, Keycloak, nginx, Orthanc, watch) is found."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline


def stop_pid(pid: int, marker: str, sig: signal.Signals, timeout: float, group: bool = False) -> bool:
    """Signal ``pid`` (while pid_runs) and wait up to ``timeout``; then SIGKILL it, or with ``group``
    the session it was started in (its children too). True if it was running."""
    if not pid_runs(pid, marker):
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while pid_runs(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        except ChildProcessError:
            pass
    if pid_runs(pid, marker):
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    return True


def _pid_alive(pid: int) -> bool:
    return pid_runs(pid, OPENSEARCH_MAIN)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _health(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/_cluster/health", timeout=2) as resp:
            status: str = json.load(resp)["status"]
            return status
    except (OSError, ValueError, KeyError):
        return None


def node_user() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(NODE_USER)
    except KeyError:
        # check=False: a concurrent run may have created the user in the meantime
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NODE_USER],
            check=False, capture_output=True,
        )
        entry = pwd.getpwnam(NODE_USER)
    return entry.pw_uid, entry.pw_gid


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def status(port: int) -> NodeState | None:
    state = NodeState.load(_state_file(port))
    if state and _pid_alive(state.pid):
        return state
    return None


def up(port: int, progress: Progress = _quiet, fresh: bool = False, timeout: float = 180.0,
       plugin_dir: Path | None = None, version: str | None = None) -> NodeState:
    """Start the node of `version` (default PACSGUARD_OPENSEARCH_VERSION, else 2.19.6) on
    127.0.0.1:<port>; reuse it if it is already ours, running that version.

    plugin_dir (default PACSGUARD_PLUGIN_ZIPS) holds plugin zips to build in, e.g. Alerting.
    A port's data belongs to one version: another needs `fresh` (2.19 cannot read 3.x data)."""
    recipe = load_recipe(version)
    version = recipe["opensearch_version"]
    run = run_dir_for(port)
    data_version = run / "data-version"
    had = data_version.read_text().strip() if data_version.exists() else version
    if had != version and not fresh:
        raise PacsguardError(f"port {port} holds the data of OpenSearch {had}; to run {version} there "
                             f"start with empty data (--fresh) or choose another --port")
    running = status(port)
    if running and not fresh:
        return running
    if running and fresh:
        down(port)
    if port_open(port):
        raise PacsguardError(f"port {port} on 127.0.0.1 is taken by another process; choose --port")
    report = build(progress, plugin_dir=plugin_dir, version=version)
    java_home = ensure_java(recipe, progress)
    if fresh and run.exists():
        shutil.rmtree(run)
    conf, data, logs = run / "config", run / "data", run / "logs"
    for d in (data, logs):
        d.mkdir(parents=True, exist_ok=True)
    data_version.write_text(version + "\n")
    if conf.exists():
        shutil.rmtree(conf)
    shutil.copytree(report.home / "config", conf)
    options = conf / "jvm.options"
    options.write_text(fit_jvm_options(options.read_text(), java_modules(java_home)))
    settings = {
        "cluster.name": "pacsguard-dev",
        "node.name": f"pacsguard-{port}",
        "discovery.type": "single-node",
        "network.host": "127.0.0.1",
        "http.port": port,
        "transport.port": port + TRANSPORT_PORT_OFFSET,
        "path.data": str(data),
        "path.logs": str(logs),
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "action.auto_create_index": True,
    }
    (conf / "opensearch.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
    env = dict(
        os.environ,
        OPENSEARCH_JAVA_HOME=str(java_home),
        OPENSEARCH_PATH_CONF=str(conf),
        OPENSEARCH_JAVA_OPTS=f"-Xms{recipe['heap']} -Xmx{recipe['heap']}",
    )
    env.pop("JAVA_TOOL_OPTIONS", None)
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:
        uid, gid = node_user()
        chown_tree(run, uid, gid)
        chown_tree(report.home, uid, gid)
        kwargs.update(user=uid, group=gid, extra_groups=[])
        env["HOME"] = str(run)
    log_path = logs / "stdout.log"
    progress(f"starting OpenSearch {recipe['opensearch_version']} on 127.0.0.1:{port}")
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [str(report.home / "bin" / "opensearch")],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=str(run), **kwargs,
        )
    url = f"http://127.0.0.1:{port}"
    state = NodeState(proc.pid, port, url, str(report.home), str(run), str(log_path), version)
    _state_file(port).write_text(json.dumps(state.__dict__, indent=2))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PacsguardError(f"OpenSearch exited with code {proc.returncode}; last log lines:\n{tail(log_path)}")
        if _health(url) in ("green", "yellow"):
            return state
        time.sleep(0.5)
    down(port)
    raise PacsguardError(f"OpenSearch did not become healthy within {timeout:.0f}s; log:\n{tail(log_path)}")


def down(port: int, timeout: float = 60.0) -> bool:
    """Stop only the node this project started on <port> (by pid). True if one was stopped."""
    state = NodeState.load(_state_file(port))
    if not state:
        return False
    stopped = stop_pid(state.pid, OPENSEARCH_MAIN, signal.SIGTERM, timeout)
    deadline = time.monotonic() + 20
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    _state_file(port).unlink(missing_ok=True)
    return stopped


def tail(path: Path | str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ------------------------------------------------------------- port claims


@dataclass
class PortClaim:
    """A port (and its transport port) reserved for one node of this process.

    The reservation is an exclusive lock on a file per port: two runs that
    probe the same port at the same moment cannot both win, and the kernel
    drops the lock when the process ends, even on a crash."""

    port: int
    fds: tuple[int, ...]

    def release(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = ()


def _try_lock(port: int) -> int | None:
    locks = cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"port-{port}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def bindable(port: int) -> bool:
    """Whether 127.0.0.1:port can be bound now (nothing listens there)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def claim_port(first: int, attempts: int = 200) -> PortClaim:
    """The first port from `first` on that no other run has claimed, no node of
    ours is recorded on, and nothing listens on (HTTP and transport port).

    Hold the claim while the node runs; `release()` (or the end of the process)
    gives it back."""
    for port in range(first, min(first + attempts, 65536 - TRANSPORT_PORT_OFFSET)):
        fds: list[int] = []
        for wanted in (port, port + TRANSPORT_PORT_OFFSET):
            fd = _try_lock(wanted)
            if fd is None:
                break
            fds.append(fd)
        claim = PortClaim(port, tuple(fds))
        if (len(fds) == 2 and status(port) is None and bindable(port)
                and bindable(port + TRANSPORT_PORT_OFFSET)):
            return claim
        claim.release()
    raise PacsguardError(f"no free port for a local node in {first}..{first + attempts - 1} "
                         f"(each needs its port and port+{TRANSPORT_PORT_OFFSET} free)")
