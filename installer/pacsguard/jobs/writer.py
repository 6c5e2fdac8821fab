"""Bulk writes to a reference index, and removal of what older runs left behind.

Every document a run writes carries job.run_id (this run) and job.key (= _id).
After writing, a run refreshes the index and deletes every document whose
run_id is not its own: those are users or values with nothing left in the
window. The node has no reindex module, so there is no _delete_by_query: the
sweep pages with search_after on job.key (a keyword with doc values, so no
fielddata on _id and no scroll or point-in-time context to leak) and bulk
deletes by id.

A writer made with background=True sends each full bulk from a thread of its own while the job
reads its next page: the node indexes one bulk while Python builds the next (at most one bulk in
flight, so memory stays two buffers). Its errors surface at the next put, delete or flush.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from pacsguard.core.connection import ApiError, Cluster
from pacsguard.core.errors import PacsguardError
from pacsguard.jobs.report import JobReport

# docs/design.md: 429s (queue full) are retried with back-off; anything else is a real error.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
BULK_DOCS = 2000  # documents per bulk request of a job: bounds the buffer and the bulk in flight


class BulkWriter:
    """Buffers index/delete actions for one index and sends them in bulks of `flush_every`."""

    def __init__(self, cluster: Cluster, index: str, flush_every: int = 1000,
                 sleep: Callable[[float], None] = time.sleep, background: bool = False) -> None:
        self.cluster = cluster
        self.index = index
        self.flush_every = flush_every
        self.sleep = sleep
        self.background = background
        self.written = 0
        self.deleted = 0
        self._lines: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        self._inflight: threading.Thread | None = None
        self._error: BaseException | None = None

    def put(self, doc_id: str, doc: dict[str, Any]) -> None:
        self._lines.append(({"index": {"_index": self.index, "_id": doc_id}}, doc))
        if len(self._lines) >= self.flush_every:
            self._hand_over()

    def delete(self, doc_id: str) -> None:
        self._lines.append(({"delete": {"_index": self.index, "_id": doc_id}}, None))
        if len(self._lines) >= self.flush_every:
            self._hand_over()

    def flush(self) -> None:
        """Send everything buffered and wait until it is written (or raise why not)."""
        self._wait()
        pending, self._lines = self._lines, []
        self._send_all(pending)

    def _hand_over(self) -> None:
        self._wait()
        pending, self._lines = self._lines, []
        if not self.background:
            self._send_all(pending)
            return
        self._inflight = threading.Thread(target=self._send_in_background, args=(pending,),
                                          name=f"pacsguard-bulk-{self.index}", daemon=True)
        self._inflight.start()

    def _send_in_background(self, pending: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        try:
            self._send_all(pending)
        except BaseException as exc:  # noqa: BLE001 - raised in the job's thread by _wait
            self._error = exc

    def _wait(self) -> None:
        if self._inflight is not None:
            self._inflight.join()
            self._inflight = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _send_all(self, pending: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        for delay in (*RETRY_DELAYS, None):
            if not pending:
                return
            pending = self._send(pending)
            if pending and delay is not None:
                self.sleep(delay)
        if pending:
            raise PacsguardError(f"bulk write to {self.index}: {len(pending)} action(s) still refused "
                                 f"with HTTP 429 after {len(RETRY_DELAYS)} retries")

    def _send(self, actions: list[tuple[dict[str, Any], dict[str, Any] | None]]
              ) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """Send once; return the actions to retry (429s only)."""
        body = "".join(json.dumps(meta) + "\n" + (json.dumps(doc) + "\n" if doc is not None else "")
                       for meta, doc in actions)
        try:
            res = self.cluster.request("POST", "/_bulk", body=body)
        except ApiError as exc:
            if exc.status == 429:
                return actions
            raise
        if not res.get("errors"):
            self._count(actions)
            return []
        retry: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        for action, item in zip(actions, res["items"]):
            op, result = next(iter(item.items()))
            status = int(result.get("status", 500))
            if status == 429:
                retry.append(action)
            elif status >= 300 and not (op == "delete" and status == 404):
                # A delete that finds nothing is fine (another run got there first).
                err = result.get("error", {})
                raise PacsguardError(f"bulk {op} of {result.get('_id')} in {self.index} failed (HTTP {status}): "
                                     f"{err.get('reason', err) if isinstance(err, dict) else err}")
            else:
                self._count([action])
        return retry

    def _count(self, actions: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        for meta, _ in actions:
            if "delete" in meta:
                self.deleted += 1
            else:
                self.written += 1


def job_stamp(run_id: str, run_at: str, key: str) -> dict[str, str]:
    return {"run_id": run_id, "run_at": run_at, "key": key}


def refresh(cluster: Cluster, index: str) -> None:
    cluster.request("POST", f"/{index}/_refresh")


def sweep_stale(cluster: Cluster, writer: BulkWriter, run_id: str, page_size: int = 1000,
                within: dict[str, Any] | None = None) -> int:
    """Delete every document of writer.index not written by `run_id` (of those matching `within`,
    e.g. the users a run rewrote; default: all of them); returns how many.

    Call after refresh(): an unrefreshed index still shows the previous
    version of a document this run has just rewritten, which would be deleted.
    """
    before = writer.deleted
    after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {
            "size": page_size,
            "_source": False,
            "track_total_hits": False,
            "query": {"bool": {"filter": [within] if within else [],
                               "must_not": [{"term": {"job.run_id": run_id}}]}},
            "sort": [{"job.key": {"order": "asc"}}],
        }
        if after is not None:
            body["search_after"] = after
        hits = cluster.request("POST", f"/{writer.index}/_search", body=body)["hits"]["hits"]
        for hit in hits:
            writer.delete(hit["_id"])
        if len(hits) < page_size:
            break
        after = hits[-1]["sort"]
    writer.flush()
    return writer.deleted - before


def finish_run(cluster: Cluster, writer: BulkWriter, target: str, run_id: str, report: JobReport, pages: int,
               began: float, page_size: int, sweep: bool = True) -> JobReport:
    """The end of every job run: write what is buffered, drop what this run did
    not rewrite (users or values gone from the window; not after a run for some users only,
    sweep=False), fill in the report."""
    writer.flush()
    refresh(cluster, target)
    if sweep:
        report.deleted = sweep_stale(cluster, writer, run_id, page_size)
        refresh(cluster, target)
    report.written, report.pages = writer.written, pages
    report.seconds = round(time.monotonic() - began, 3)
    return report
