"""Review the failure index: list failures, open their sealed originals, replay them (fixed or not).

For the failure-reviewer role (pack/security/role-failure-reviewer.yaml): it
reads the failure index and may write events to the data stream; the
failures key (collector/failures.py) opens the originals the collector sealed.
A replayed event gets a new id ``<failed id>-replay-<n>`` and runs through the
router again; should it fail again it lands in the failure index under that id.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pacsguard.collector.failures import SEALED_SUFFIX, FailureProtector
from pacsguard.core.connection import ApiError, Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.core.escaping import path_segment
from pacsguard.core.settings import Settings


def list_failures(cluster: Cluster, settings: Settings, size: int = 50) -> list[dict[str, Any]]:
    """The newest failures (not their sealed companions): id, time, error, format, whether an original is sealed."""
    index = settings.index("failures")
    res = cluster.request("POST", f"/{index}/_search", body={
        "size": size, "sort": [{"@timestamp": "desc"}],
        "query": {"bool": {"must_not": [{"exists": {"field": "pacsguard.original_of"}}]}}})
    hits = res["hits"]["hits"]
    sealed_ids = {h["_id"] + SEALED_SUFFIX for h in hits}
    found: set[str] = set()
    if sealed_ids:
        docs = cluster.request("POST", f"/{index}/_mget", body={"ids": sorted(sealed_ids)}, params={"_source": "false"})
        found = {d["_id"] for d in docs["docs"] if d.get("found")}
    return [{"id": h["_id"], "timestamp": h["_source"].get("@timestamp"),
             "format": (h["_source"].get("pacs") or {}).get("source_format"),
             "error": (h["_source"].get("error") or {}).get("message"),
             "sealed": h["_id"] + SEALED_SUFFIX in found or "sealed" in (h["_source"].get("event") or {})}
            for h in hits]


def decrypt_failure(cluster: Cluster, settings: Settings, failure_id: str, key: bytes) -> str:
    """The original text of a failed event, checked against the fingerprint the pipeline stored."""
    index = settings.index("failures")
    failure = cluster.request("GET", f"/{index}/_doc/{path_segment(failure_id)}", ok_missing=True)
    if not failure or not failure.get("found"):
        raise PacsguardError(f"no failure {failure_id} in {index}")
    event = failure["_source"].get("event") or {}
    sealed = event.get("sealed")
    if sealed is None:
        companion = cluster.request("GET", f"/{index}/_doc/{path_segment(failure_id + SEALED_SUFFIX)}", ok_missing=True)
        if not companion or not companion.get("found"):
            raise PacsguardError(f"failure {failure_id} has no sealed original (it did not come through the "
                                 "pacsguard collector, or the collector had no failures key)")
        sealed = companion["_source"]["event"]["sealed"]
    text = FailureProtector(key).unseal(failure_id, sealed)
    expected = event.get("original_sha256")
    if expected and hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest() != expected:
        raise PacsguardError(f"the sealed original of {failure_id} does not match the failure's fingerprint")
    return text


def replay_failure(cluster: Cluster, settings: Settings, failure_id: str, text: str) -> dict[str, Any]:
    """Send ``text`` (the original, or a fixed version) to the data stream under a new id; say where it landed."""
    stream = settings.index("events_data_stream")
    for attempt in range(1, 100):
        new_id = f"{failure_id}-replay-{attempt}"
        if cluster.exists(f"/{settings.index('failures')}/_doc/{path_segment(new_id)}"):
            continue  # an earlier replay failed again under this id
        try:
            res = cluster.request("PUT", f"/{stream}/_create/{path_segment(new_id)}", body={"message": text},
                                  params={"refresh": "wait_for"})
        except ApiError as exc:
            if exc.status == 409:
                continue  # replayed before: the next number
            raise
        if res.get("result") == "created":
            landed = "failures" if res.get("_index") == settings.index("failures") else "events"
            return {"id": new_id, "index": res.get("_index"), "landed": landed}
    raise PacsguardError(f"{failure_id} was replayed 99 times already")
