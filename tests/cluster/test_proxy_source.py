"""The reverse-proxy source end to end, with real software only: Orthanc with its DICOMweb plugin
behind nginx (Debian's packages, started by pacsguard.devnode.pacs), instances made with pydicom
and uploaded with STOW-RS, retrieved with WADO-RS by dicomweb-client through nginx with the user
header an auth proxy sets, nginx's JSON access log shipped by `pacsguard collect --file`, the
profiles job and the pacsguard engine (Watcher) deciding.

A known account logs in from browser A; later it logs in from browser B (a new device: 2b) and
retrieves 15 studies within minutes (4a), raised to critical because of the new device (4c)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.settings import Settings
from pacsguard.devnode import pacs
from pacsguard.devnode.keycloak import free_port
from pacsguard.jobs import run_job
from pacsguard.services.alerts import list_alerts
from pacsguard.services.install import install
from pacsguard.services.watch import Watcher

pytestmark = pytest.mark.cluster
USER = "rad.jones"
BROWSER_A = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
BROWSER_B = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/131.0.0.0 Safari/537.36")
STUDIES = 15


@pytest.fixture(scope="module")
def front() -> Iterator[pacs.PacsState]:
    try:
        pacs.install_software()  # what is missing, as root
    except PacsguardError as exc:
        pytest.skip(f"cannot install the PACS front: {exc}")
    port = free_port()
    state = pacs.up(port)
    yield state
    assert pacs.down(port), "the front had stopped before the end of the tests"
    assert pacs.status(port) is None
    shutil.rmtree(state.run_dir)  # a port of its own each run: nothing to reuse


def make_instance(n: int) -> Any:
    """A small, valid Secondary Capture instance of a study of its own (8x8 pixels)."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = f"PG-TEST-{n:04d}"
    ds.PatientName = f"Test^Patient{n}"
    ds.StudyDate, ds.StudyTime, ds.Modality = "20261201", "101500", "OT"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.AccessionNumber = str(n), 1, 1, f"ACC{n:05d}"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(64))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    # written and read back as a DICOM file (preamble, DICM prefix, group 2), as a modality sends it
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def client(front: pacs.PacsState, user: str, agent: str) -> Any:
    """A DICOMweb client through nginx, as a browser session of `user` behind the auth proxy."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    session.headers.update({"User-Agent": agent, "X-Auth-Request-User": user})
    return DICOMwebClient(url=front.dicomweb_url, session=session)


def login(front: pacs.PacsState, user: str, agent: str) -> None:
    import requests

    answer = requests.post(f"{front.url}{pacs.LOGIN_PATH}", headers={"User-Agent": agent, "X-Auth-Request-User": user},
                           timeout=10)
    assert answer.status_code == 204


class Collector:
    """`pacsguard collect --file <nginx access log>` running for the whole test."""

    def __init__(self, settings: Settings, log: str, tmp: Path) -> None:
        user_settings = tmp / "settings.yaml"
        user_settings.write_text(json.dumps({"id_prefix": settings.id_prefix, "namespace": settings.namespace}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pacsguard.cli", "--url", settings.cluster.url, "--settings", str(user_settings),
             "collect", "--file", log, "--state-dir", str(tmp / "state"), "--flush-interval", "0.2"],
            env={**os.environ, "PACSGUARD_SALT": "proxy-salt-0123456789abcdef"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        return err


def wait_for(cluster: Cluster, settings: Settings, query: dict[str, Any], want: int, collector: Collector) -> int:
    stream = settings.index("events_data_stream")
    deadline = time.monotonic() + 120
    got = 0
    while time.monotonic() < deadline and collector.proc.poll() is None:
        cluster.request("POST", f"/{stream}/_refresh", ok_missing=True)
        got = (cluster.request("POST", f"/{stream}/_count", body={"query": query}, ok_missing=True) or {}).get("count", 0)
        if got >= want:
            break
        time.sleep(0.5)
    return got


def term(field: str, value: str) -> dict[str, Any]:
    return {"term": {field: value}}


def test_new_browser_then_bulk_retrieval_raise_2b_and_4a_escalated(
        front: pacs.PacsState, pack_settings: Settings, tmp_path: Path) -> None:
    settings = pack_settings
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    collector = Collector(settings, front.access_log, tmp_path)
    try:
        # The archive gets its studies from a modality (STOW-RS through the front).
        modality = client(front, "modality-ct1", "pacs-modality/1.0")
        instances = [make_instance(n) for n in range(STUDIES)]
        for ds in instances:
            modality.store_instances(datasets=[ds])
        studies = [ds.StudyInstanceUID for ds in instances]
        assert {s["0020000D"]["Value"][0] for s in modality.search_for_studies()} >= set(studies)

        # Browser A: the account's usual device.
        login(front, USER, BROWSER_A)
        client(front, USER, BROWSER_A).retrieve_study(studies[0])
        # a viewer's static asset: not PACS activity, never indexed
        import requests
        assert requests.get(f"{front.url}/app/main.js", headers={"User-Agent": BROWSER_A}, timeout=10).ok

        logins = {"bool": {"filter": [term("event.action", "user-login"), term("user.name", USER)]}}
        assert wait_for(cluster, settings, logins, 1, collector) == 1
        imports = {"bool": {"filter": [term("event.action", "study-import"), term("user.name", "modality-ct1")]}}
        assert wait_for(cluster, settings, imports, STUDIES, collector) == STUDIES
        run_job(cluster, settings, "profiles")
        watcher = Watcher(cluster, settings, run_jobs=False)
        watcher.tick()
        watcher.close()  # hands the lease over: the next watch leads at once
        assert not list_alerts(cluster, settings, signal="2b"), "the first device of an account is not new"

        # Browser B: a login from a new device, then 15 studies retrieved (WADO-RS) in minutes.
        login(front, USER, BROWSER_B)
        browser_b = client(front, USER, BROWSER_B)
        for uid in studies:
            retrieved = browser_b.retrieve_study(uid)
            assert [ds.SOPInstanceUID for ds in retrieved] == [i.SOPInstanceUID for i in instances
                                                               if i.StudyInstanceUID == uid]
        downloads = {"bool": {"filter": [term("event.action", "study-download"), term("user.name", USER)]}}
        assert wait_for(cluster, settings, downloads, STUDIES + 1, collector) == STUDIES + 1
        assert wait_for(cluster, settings, logins, 2, collector) == 2
    finally:
        err = collector.stop()
    stream = settings.index("events_data_stream")
    cluster.request("POST", f"/{stream}/_refresh")
    failed = (cluster.request("GET", f"/{settings.index('failures')}/_count", ok_missing=True) or {}).get("count", 0)
    assert failed == 0, err[-2000:]
    # What the pipeline made of nginx's lines: two devices, the studies, the client address.
    hits = cluster.request("POST", f"/{stream}/_search", body={"size": 100, "query": downloads,
                                                               "sort": [{"@timestamp": "asc"}]})["hits"]["hits"]
    docs = [h["_source"] for h in hits]
    assert {uid for d in docs for uid in d["pacs"]["study"]["uids"]} == set(studies)
    assert all(d["source"]["ip"] == "127.0.0.1" and d["pacs"]["source_format"] == "proxy" for d in docs)
    assert len({d["device"]["id"] for d in docs}) == 2
    assert {d["user_agent"]["name"] for d in docs} == {"Firefox", "Chrome"}
    assert cluster.request("POST", f"/{stream}/_count", body={"query": {"term": {"url.path": "/app/main.js"}}})[
        "count"] == 0

    run_job(cluster, settings, "profiles")
    watcher = Watcher(cluster, settings, run_jobs=False)
    watcher.tick()
    watcher.close()
    assert not watcher.report.errors
    new_device = list_alerts(cluster, settings, signal="2b")
    assert [a.entity for a in new_device] == [USER]
    bulk = list_alerts(cluster, settings, signal="4a")
    assert [a.entity for a in bulk] == [USER]
    assert bulk[0].severity == "critical", "4c: a bulk export after a new-device login is critical"


def test_settings_choose_the_login_path_and_the_trusted_proxies(cluster_url: str, unique: str) -> None:
    """sources.proxy: a site's own login path, and X-Forwarded-For believed only from its load balancer."""
    from pacsguard.services.install import uninstall
    from testnode import make_settings

    settings = make_settings(cluster_url, f"pgp{unique}", f"p{unique}",
                             sources={"proxy": {"login_paths": ["/sso/done"], "trusted_proxies": ["10.0.0.2"]}})
    cluster = Cluster.connect(settings.cluster)
    install(cluster, settings, allow_missing_plugins=True)
    try:
        def line(uri: str, addr: str, xff: str) -> dict[str, Any]:
            return {"message": json.dumps({"msec": 1796169468.5, "remote_addr": addr, "x_forwarded_for": xff,
                                           "method": "GET", "uri": uri, "status": 302, "bytes": 0,
                                           "user_agent": BROWSER_A, "user": USER})}

        docs = [line("/sso/done?code=secret-code", "10.0.0.2", "198.51.100.4, 10.0.0.2"),
                line("/sso/done", "203.0.113.8", "198.51.100.4"),
                line("/login", "10.0.0.2", "198.51.100.4")]
        router = f"{settings.scope}-router"
        results = cluster.request("POST", f"/_ingest/pipeline/{router}/_simulate",
                                  body={"docs": [{"_source": d} for d in docs]})["docs"]
        first, second = (r["doc"]["_source"] for r in results[:2])
        assert first["event"]["action"] == "user-login" and first["source"]["ip"] == "198.51.100.4"
        assert "secret-code" not in first["event"]["original"]  # an OAuth code is a credential
        assert "query" not in first.get("url", {})
        # an untrusted sender's X-Forwarded-For is its own claim: the address is the peer's
        assert second["source"]["ip"] == "203.0.113.8"
        assert results[2] is None or results[2].get("doc") is None, "the default /login is not this site's login path"
    finally:
        uninstall(cluster, settings, purge=True)


def test_cli_status_and_down_name_the_front_it_started(front: pacs.PacsState) -> None:
    from pacsguard.cli import app
    from typer.testing import CliRunner

    shown = CliRunner().invoke(app, ["--json", "cluster", "pacs", "status", "--port", str(front.port)])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    assert (info["running"], info["url"], info["access_log"]) == (True, front.url, front.access_log)
    other = free_port()
    missing = CliRunner().invoke(app, ["cluster", "pacs", "down", "--port", str(other)])
    assert missing.exit_code == 0 and f"no pacsguard PACS front running on port {other}" in missing.output
    assert pacs.status(front.port) is not None  # another port's down leaves this one alone
