"""`respond scope` and `respond preserve` of one alert answer from the same events (issue 21, item 5).

The entity is also named by events it did not make (an admin granted it a role): the bundle
holds them as evidence, so the scope counts them too, in the same window; each says its window.
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path

from pacsguard.cli import app
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from pacsguard.engines.alerts import AlertStore
from pacsguard.services.response.preserve import preserve
from pacsguard.services.response.scope import scope
from pacsguard.services.watch import Watcher
from testnode import make_settings
from typer.testing import CliRunner


def test_scope_counts_the_events_the_bundle_holds(pack: Settings, tmp_path: Path) -> None:
    settings = make_settings(pack.cluster.url, pack.id_prefix, pack.namespace,
                             engine={"mode": "pacsguard", "renotify_every": "0s"})
    cluster = Cluster.connect(settings.cluster)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    def event(at: dt.datetime, **fields: object) -> str:
        return json.dumps({"timestamp": at.isoformat().replace("+00:00", "Z"), "app": "cloudpacs", **fields})

    events = [event(now - dt.timedelta(seconds=30 - i), action="user-login", outcome="failure", user="dr.jones",
                    source_ip="81.2.69.142") for i in range(9)]
    events.append(event(now - dt.timedelta(minutes=5), action="study-view", user="dr.jones",
                        studies=["1.2.826.0.1.3680043.8.498.7"], source_ip="81.2.69.142"))
    # made by someone else, naming dr.jones (related.user): evidence, and so part of the scope
    events.append(event(now - dt.timedelta(minutes=4), action="role-grant", user="admin.carla", roles=["pacs-admin"],
                        target_user="dr.jones", roles_changed=["pacs-admin"], source_ip="10.0.0.5"))
    body = "".join(json.dumps({"create": {}}) + "\n" + json.dumps({"message": m}) + "\n" for m in events)
    assert not cluster.client.bulk(index=settings.index("events_data_stream"), body=body,
                                   params={"refresh": "true"})["errors"]
    watcher = Watcher(cluster, settings, run_jobs=False)
    watcher.tick(now + dt.timedelta(seconds=5))
    watcher.close()
    alert_id = next(a.id for a in AlertStore(cluster, settings.index("alerts")).search(signal="1a")
                    if a.entity == "dr.jones")

    at = now + dt.timedelta(minutes=1)
    report = scope(cluster, settings, alert_id, now=at)
    bundle, _ = preserve(cluster, settings, alert_id, "ann", tmp_path / "e.zip", now=at)
    with zipfile.ZipFile(bundle.path) as zf:
        in_bundle = zf.read("events.ndjson").decode().splitlines()
    assert report["events"] == bundle.events == len(in_bundle) == 11
    assert report["window"] == json.loads(zipfile.ZipFile(bundle.path).read("query.json"))["window"]
    assert report["accounts"] == [{"user": "admin.carla", "events": 1}, {"user": "dr.jones", "events": 10}]

    # what a person reads: both name the window and the count
    sfile = tmp_path / "settings.yaml"
    sfile.write_text(json.dumps({"cluster": {"url": settings.cluster.url}, "id_prefix": settings.id_prefix,
                                 "namespace": settings.namespace, "pseudonymization": {"salt": "x" * 20}}))
    scope_out = CliRunner().invoke(app, ["--settings", str(sfile), "respond", "scope", alert_id]).output
    preserve_out = CliRunner().invoke(app, ["--settings", str(sfile), "respond", "preserve", alert_id,
                                            "--out", str(tmp_path / "f.zip")]).output
    assert ": 11 event(s)" in scope_out and "window " in scope_out, scope_out
    assert "11 event(s)" in preserve_out and "window " in preserve_out, preserve_out
