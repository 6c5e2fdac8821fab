"""Local Keycloak: cold download, start-up to ready (first, warm, empty database) and memory.

    python benchmarks/keycloak_start.py            # cold: a throwaway cache, so the download is real
    python benchmarks/keycloak_start.py --warm-only --port 8180   # only restarts, on the normal cache

What it does:
1. cold (unless --warm-only): points PACSGUARD_CACHE at a new temporary folder and
   runs `up`: download from Maven Central, unpack, first start (Quarkus augmentation
   and an empty dev-file database), realm set-up; each phase timed from the progress
   lines `up` prints;
2. warm: stops it and starts it again (augmented, database kept): time to ready;
3. empty database: `up --fresh` (augmented, new database): time to ready;
4. RSS (launcher + JVM) when ready, and after 50 real password logins;
5. stops what it started and removes the temporary cache.

Not a test: numbers depend on the machine (and on its load); run it where you size.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable

PHASES = (("downloading", "download"), ("unpacking", "unpack"), ("starting Keycloak", "start to ready"),
          ("Keycloak ready", "realm set-up"))


def timed_up(up: Callable[..., object], **kwargs: object) -> tuple[object, dict[str, float], float]:
    marks: list[tuple[str, float]] = []

    def note(message: str) -> None:
        marks.append((message, time.monotonic()))
        print(f"    {message}")

    started = time.monotonic()
    state = up(progress=note, **kwargs)
    ended = time.monotonic()
    phases: dict[str, float] = {}
    points = [(label, at) for message, at in marks for prefix, label in PHASES if message.startswith(prefix)]
    for i, (label, at) in enumerate(points):
        phases[label] = (points[i + 1][1] if i + 1 < len(points) else ended) - at
    return state, phases, ended - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--warm-only", action="store_true", help="skip the cold run (use the normal cache)")
    args = parser.parse_args()

    temp_cache = None
    if not args.warm_only:
        temp_cache = tempfile.mkdtemp(prefix="pacsguard-bench-keycloak-")
        os.chmod(temp_cache, 0o755)  # as root, Keycloak runs as the node user and must enter it
        os.environ["PACSGUARD_CACHE"] = temp_cache
    from pacsguard.devnode import keycloak as devkc
    from pacsguard.idp.keycloak_rest import request_token

    port = args.port or devkc.free_port()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpu, load {os.getloadavg()[0]:.1f}")
    try:
        rows: list[tuple[str, str]] = []
        if temp_cache:
            print("cold (empty cache):")
            _, phases, total = timed_up(devkc.up, port=port)
            archive = next(iter((devkc.keycloak_root().parent / "downloads").rglob("*.tar.gz")))
            size = archive.stat().st_size / 2**20
            rows += [(f"cold {k}", f"{v:.1f} s") for k, v in phases.items()]
            rows += [("cold total", f"{total:.1f} s"), ("distribution size", f"{size:.0f} MiB")]
        else:
            devkc.up(port=port)
        devkc.down(port)
        print("warm restart (augmented, database kept):")
        state, phases, total = timed_up(devkc.up, port=port)
        rows += [("warm start to ready", f"{phases.get('start to ready', total):.1f} s"),
                 ("warm total with realm check", f"{total:.1f} s")]
        print("restart with an empty database:")
        state, phases, total = timed_up(devkc.up, port=port, fresh=True)
        rows += [("empty-database start to ready", f"{phases.get('start to ready', total):.1f} s"),
                 ("empty-database total with realm set-up", f"{total:.1f} s")]
        assert isinstance(state, devkc.KeycloakState)
        rows.append(("RSS when ready", f"{devkc.rss_bytes(state) / 2**20:.0f} MiB"))
        started = time.monotonic()
        for _ in range(50):
            request_token(state.url, state.realm, {"grant_type": "password", "client_id": state.login_client,
                                                   "username": "alice", "password": state.user_password("alice")})
        rows.append(("50 password logins", f"{time.monotonic() - started:.1f} s"))
        rows.append(("RSS after 50 logins", f"{devkc.rss_bytes(state) / 2**20:.0f} MiB"))
    finally:
        devkc.down(port)
        if temp_cache:
            shutil.rmtree(temp_cache, ignore_errors=True)
    print()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
