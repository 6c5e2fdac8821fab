"""`pacsguard collect --syslog-file`: a file of syslog frames as rsyslog writes it (RFC 5424 and
RFC 3164 layouts, one frame a line, ATNA XML of our own) ends up normalized in the data stream,
not in the failure index (issue 10: `--file` sent such frames to the failure index)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import syslog_files
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.services.install import install

pytestmark = pytest.mark.cluster


def test_syslog_file_frames_are_parsed_into_the_data_stream(pack_settings: Settings, tmp_path: Path) -> None:
    settings = pack_settings
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=250000) - dt.timedelta(minutes=5)
    frames = syslog_files.frames(when)
    log = tmp_path / "audit.log"
    log.write_text("".join(line + "\n" for _, _, line in frames), encoding="utf-8")
    user_settings = tmp_path / "settings.yaml"
    user_settings.write_text(json.dumps({"id_prefix": settings.id_prefix, "namespace": settings.namespace}))
    proc = subprocess.Popen([sys.executable, "-m", "pacsguard.cli", "--url", settings.cluster.url,
                             "--settings", str(user_settings), "collect", "--syslog-file", str(log),
                             "--state-dir", str(tmp_path / "state"), "--flush-interval", "0.2"],
                            env={**os.environ, "PACSGUARD_SALT": "syslog-file-salt-0123456789"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stream, failures = settings.index("events_data_stream"), settings.index("failures")

    def count(index: str) -> int:
        cluster.request("POST", f"/{index}/_refresh", ok_missing=True)
        return int((cluster.request("GET", f"/{index}/_count", ok_missing=True) or {}).get("count", 0))

    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and count(stream) + count(failures) < len(frames):
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert count(failures) == 0, err[-2000:]
    hits = cluster.request("POST", f"/{stream}/_search", body={"size": 10})["hits"]["hits"]
    docs = [h["_source"] for h in hits]
    assert sorted(d["event"]["action"] for d in docs) == sorted(syslog_files.expected_action(name)
                                                               for _, name, _ in frames)
    assert all(d["pacs"]["source_format"] == "atna" and d["@timestamp"].startswith(when.strftime("%Y-%m-%dT%H:%M"))
               for d in docs)
    # the original kept is the syslog line (patient data redacted), not the JSON envelope
    assert all("#012" in d["event"]["original"] or "AuditMessage" in d["event"]["original"] for d in docs)
