"""Issue 16, item 8: an id is one path segment of the URL the pack builds, whatever it holds."""

from __future__ import annotations

import pytest
from pacsguard.core.connection import Cluster
from pacsguard.core.escaping import path_segment
from pacsguard.core.settings import Settings
from pacsguard.engines.alerts import AlertNotFound, AlertStore

pytestmark = pytest.mark.cluster


def test_an_alert_id_with_url_syntax_names_that_alert_and_no_other(cluster: Cluster, pack: Settings) -> None:
    index = pack.index("alerts")
    store = AlertStore(cluster, index)
    cluster.request("PUT", f"/{index}/_doc/pg-a", body={"state": "ACTIVE", "entity": {"value": "alice"}},
                    params={"refresh": "true"})
    for forged in ("pg-a?pretty", "pg-a#x", "pg-a/_source", "../pg-a"):
        with pytest.raises(AlertNotFound):  # before: "pg-a?pretty" read alert pg-a, "?" was a query string
            store.get(forged)
    odd = "pg-b?x=1&y/z#w%"
    cluster.request("PUT", f"/{index}/_doc/{path_segment(odd)}", body={"state": "ACTIVE", "entity": {"value": "bob"}},
                    params={"refresh": "true"})
    assert store.get(odd).id == odd and store.get(odd).source["entity"]["value"] == "bob"
