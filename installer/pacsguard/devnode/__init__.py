"""Dev/test OpenSearch: a local node built from Maven Central, or a Docker container.

`auto` picks Docker when an engine answers (through the docker SDK), else the
local node. Both listen on 127.0.0.1:<port> with the same settings, and run the
chosen OpenSearch version (`version`, else PACSGUARD_OPENSEARCH_VERSION, else the
recipe's default; pack/local-node.yaml lists the lines).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from pacsguard.core.connection import REQUIRED_MODULES, REQUIRED_PLUGINS
from pacsguard.core.errors import PacsguardError
from pacsguard.core.models import Progress
from pacsguard.devnode import lines, local

CONTAINER_PREFIX = "pacsguard-opensearch"


def _docker_client() -> Any | None:
    try:
        import docker  # optional extra
    except ImportError:
        return None
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return None


def _wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_cluster/health", timeout=2) as resp:
                if json.load(resp)["status"] in ("green", "yellow"):
                    return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(1)
    raise PacsguardError(f"OpenSearch at {url} did not become healthy within {timeout:.0f}s")


def _docker_up(client: Any, port: int, fresh: bool, progress: Progress, recipe: dict[str, Any]) -> dict[str, Any]:
    name = f"{CONTAINER_PREFIX}-{port}"
    existing = client.containers.list(all=True, filters={"name": name})
    if existing and fresh:
        existing[0].remove(force=True)
        existing = []
    if existing:
        container = existing[0]
        if container.status != "running":
            container.start()
    else:
        image = recipe["docker_image"]
        progress(f"starting {image} as {name}")
        container = client.containers.run(
            image, name=name, detach=True,
            ports={"9200/tcp": ("127.0.0.1", port)},
            environment={
                "discovery.type": "single-node",
                "DISABLE_SECURITY_PLUGIN": "true",
                "DISABLE_INSTALL_DEMO_CONFIG": "true",
                "OPENSEARCH_JAVA_OPTS": f"-Xms{recipe['heap']} -Xmx{recipe['heap']}",
                "cluster.routing.allocation.disk.threshold_enabled": "false",
            },
            labels={"managed-by": "pacsguard"},
        )
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, 180)
    return {"url": url, "mode": "docker", "container": container.name, "port": port}


def start(port: int, mode: str = "auto", fresh: bool = False, progress: Progress = lambda _: None,
          version: str | None = None) -> dict[str, Any]:
    if mode not in ("auto", "local", "docker"):
        raise PacsguardError(f"--mode must be auto, local or docker, not {mode!r}")
    recipe = local.load_recipe(version)  # refuses a version outside the lines before anything starts
    client = _docker_client() if mode in ("auto", "docker") else None
    if mode == "docker" and client is None:
        raise PacsguardError("--mode docker: no Docker engine answers here (install the `docker` extra and start one)")
    if client is not None:
        return {**_docker_up(client, port, fresh, progress, recipe), "version": recipe["opensearch_version"]}
    state = local.up(port, progress=progress, fresh=fresh, version=recipe["opensearch_version"])
    return {"url": state.url, "mode": "local", "pid": state.pid, "port": port, "home": state.home,
            "log": state.log, "version": state.version}


def stop(port: int) -> bool:
    if local.status(port) is not None or local.NodeState.load(local.run_dir_for(port) / "node.json"):
        return local.down(port)
    client = _docker_client()
    if client is not None:
        for container in client.containers.list(all=True, filters={"name": f"{CONTAINER_PREFIX}-{port}"}):
            container.remove(force=True)
            return True
    return False


def describe(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    state = local.status(port)
    mode = "local" if state else "docker"
    try:
        with urllib.request.urlopen(f"{url}/_nodes/plugins", timeout=5) as resp:
            nodes = json.load(resp)["nodes"]
        with urllib.request.urlopen(f"{url}/_cluster/health", timeout=5) as resp:
            health = json.load(resp)["status"]
    except (OSError, ValueError):
        return {"running": False, "url": url}
    node = next(iter(nodes.values()))
    plugins = sorted(p["name"] for p in node.get("plugins", []))
    modules = sorted(m["name"] for m in node.get("modules", []))
    needed = {**REQUIRED_PLUGINS, **REQUIRED_MODULES}
    missing = {n: why for n, why in needed.items() if n not in set(plugins) | set(modules)}
    return {"running": True, "url": url, "mode": mode, "version": node["version"],
            "support": lines.support(node["version"]), "health": health,
            "plugins": plugins, "modules": modules, "missing": missing}


def logs(port: int, lines: int = 50) -> str:
    state = local.status(port) or local.NodeState.load(local.run_dir_for(port) / "node.json")
    if state:
        return local.tail(Path(state.log), lines)
    client = _docker_client()
    if client is not None:
        for container in client.containers.list(all=True, filters={"name": f"{CONTAINER_PREFIX}-{port}"}):
            return str(container.logs(tail=lines).decode(errors="replace"))
    raise PacsguardError(f"no pacsguard node on port {port}")
