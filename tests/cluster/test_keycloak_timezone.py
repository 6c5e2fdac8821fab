"""sources.keycloak.timezone: text lines carry no offset; the setting says which zone their clock is in."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from pacsguard.core.connection import Cluster
from pacsguard.core.settings import Settings
from testnode import installed_pack, make_settings

pytestmark = pytest.mark.cluster

LINE = ('{ts} INFO  [org.keycloak.events] (executor-thread-1) type="LOGIN", realmId="r-1", realmName="pacs", '
        'clientId="pacs-viewer", userId="u-1", ipAddress="203.0.113.9", username="alice"')


@pytest.fixture
def paris_pack(cluster_url: str, unique: str) -> Iterator[Settings]:
    with installed_pack(cluster_url, f"pgz{unique}", f"z{unique}",
                        sources={"keycloak": {"timezone": "Europe/Paris"}},
                        thresholds={"max_backdate_window": "36500d", "max_future_window": "36500d"}) as settings:
        yield settings


@pytest.mark.parametrize(("ts", "utc"), [
    ("2026-07-01 10:00:00,250", "2026-07-01T08:00:00.250Z"),      # summer: +02:00
    ("2026-01-15 10:00:00,000", "2026-01-15T09:00:00.000Z"),      # winter: +01:00
    ("2026-01-15 10:00:00,000+05", "2026-01-15T05:00:00.000Z"),   # the line's own offset wins
])
def test_text_line_clock_is_read_in_the_configured_zone(ts: str, utc: str, paris_pack: Settings) -> None:
    cluster = Cluster.connect(paris_pack.cluster)
    res = cluster.request("POST", f"/_ingest/pipeline/{paris_pack.scope}-router/_simulate",
                          body={"docs": [{"_index": paris_pack.index("events_data_stream"),
                                          "_source": {"message": LINE.format(ts=ts)}}]})
    doc = res["docs"][0]["doc"]["_source"]
    assert doc["@timestamp"] == utc, json.dumps(doc.get("error"))


def test_a_zone_that_does_not_exist_is_refused(cluster_url: str) -> None:
    with pytest.raises(Exception, match=r"sources.keycloak.timezone \[Europe/Pariss\] is not a time zone name"):
        make_settings(cluster_url, "pgz", "z", sources={"keycloak": {"timezone": "Europe/Pariss"}})
