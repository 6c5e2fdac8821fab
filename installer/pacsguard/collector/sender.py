"""Reads the write-ahead journal and bulks its events into the data stream.

Flow:  sources -> Journal (disk, write-ahead) -> workers -> POST <data stream>/_bulk

- A source's event is appended to the journal (and so survives ``kill -9``)
  before the source reads on or answers; the sender never holds an event only
  in memory. Memory is bounded by ``workers`` chunks of ``batch_bytes``.
- Every item is ``create`` with the event's own ``_id``: a retry or a replay
  after a crash can never duplicate; a 409 means an earlier attempt stored it.
- Per item, ``_index`` tells where the pipeline put it: the failure index
  (failed) or a backing index of the data stream (indexed).
- 429s and connection errors are retried with exponential back-off; after
  ``retry_budget`` seconds the collector reports its pending events as spooled
  (they wait in the journal) and probes the cluster with a slower back-off.
- An item the cluster refuses for good (e.g. a mapping conflict after the
  pipeline) is written to the failure index with the reason: nothing is
  silently lost.
- Chunks settle in journal order; their outcomes are counted and saved with
  the journal offsets in one atomic write (counters.py).
- A journal that cannot be written (disk full, read-only, I/O error) is a state,
  not a loop: the first failure is logged once, intake refuses at once (HTTP 507,
  UDP rejected ``journal_unwritable``) or waits without spinning (TCP/TLS, files),
  a probe retries with back-off (0.5 s doubling to 5 s, a reminder at most every
  30 s), and the recovery is logged once. The failed write left nothing in the
  journal (journal.py), so nothing is stored twice when space returns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pacsguard.collector.atna_envelope import ENVELOPE_PREFIX
from pacsguard.collector.counters import Counters
from pacsguard.collector.events import Event
from pacsguard.collector.failures import SEALED_SUFFIX, FailureProtector, fingerprint
from pacsguard.collector.journal import Chunk, Journal
from pacsguard.collector.ratelog import RateLimitedLog
from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError

log = logging.getLogger("pacsguard.collector")


@dataclass(frozen=True)
class SenderConfig:
    batch_size: int = 500
    batch_bytes: int = 8 * 1024 * 1024
    flush_interval: float = 1.0  # kept for compatibility: batches no longer wait to fill (the journal holds them)
    workers: int = 2  # bulk requests in flight at once
    retry_budget: float = 5.0  # seconds of retries before pending events are reported as spooled
    max_backoff: float = 2.0
    replay_backoff_max: float = 5.0  # probing a cluster that is away
    queue_events: int = 20_000  # unused since the journal: kept so existing settings files still load
    queue_bytes: int = 64 * 1024 * 1024
    save_interval: float = 1.0  # seconds between saves of counters that changed outside chunks


@dataclass
class BulkResult:
    indexed: list[Event] = field(default_factory=list)
    failed: list[Event] = field(default_factory=list)
    retry: list[Event] = field(default_factory=list)  # item 429 / 5xx
    refused: list[tuple[Event, str]] = field(default_factory=list)  # item 4xx other than 409


# Item refusals that mean the default pipeline did not run, not that the event
# is bad: the router always sets @timestamp (also on its failure path), so a raw
# {"message"} doc refused for lacking it skipped the pipeline. A node that has
# not yet recovered its cluster state does that (elastic/elasticsearch#49499,
# fixed there after the OpenSearch fork): retry such items, never divert them.
PIPELINE_SKIPPED = ("single-valued timestamp field '@timestamp'", "pipeline with id [")

# Refusals that say "not now" rather than "never": a file line refused so is read again next run.
TEMPORARY_REJECTIONS = frozenset({"shutting_down", "spool_full", "queue_full", "journal_unwritable"})
PROBE_BYTES = 64 * 1024  # what the journal probe writes to see whether the disk takes events again
PROBE_BACKOFF = (0.5, 5.0)  # first and longest wait between probes of a journal that cannot be written


class Unavailable(Exception):
    """The whole bulk request failed (unreachable, 429, 5xx, auth): retry."""


class Closing(Exception):
    """The collector stops: what is not settled stays in the journal for the next run."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _item_error(error: Any) -> str:
    """type: reason (caused by: ...) of a bulk item error."""
    if not isinstance(error, dict):
        return str(error)
    text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict):
        text += f" (caused by {cause.get('type', '')}: {cause.get('reason', '')})"
    return text


def safe_original(message: str) -> str:
    """What a diverted event keeps as event.original: never an ATNA envelope's doc.

    The envelope's doc still holds the raw patient id (the pipeline hashes it);
    only the redacted ``original`` may be stored.
    """
    if message.startswith(ENVELOPE_PREFIX):
        try:
            envelope = json.loads(message)
            return str(envelope.get("original") or "")
        except ValueError:
            return ""
    return message


class Sender:
    def __init__(self, cluster: Cluster, data_stream: str, failures_index: str, counters: Counters,
                 journal: Journal, config: SenderConfig, protector: FailureProtector | None = None) -> None:
        self.cluster = cluster
        self.data_stream = data_stream
        self.failures_index = failures_index
        self.counters = counters
        self.journal = journal
        self.config = config
        # Seals the originals of failed events (failures.py); without it failures keep no original.
        self.protector = protector
        self._workers: list[asyncio.Task[None]] = []
        self._saver: asyncio.Task[None] | None = None
        self._appended = asyncio.Event()
        self._space = asyncio.Event()
        self._closing = False
        self._unavailable_since: float | None = None
        self._saved_version = -1
        self._checkpoints_dirty = False
        self.rlog = RateLimitedLog(log, interval=30.0)
        # Why the journal cannot be written now (None: it can), since when, and the probe that waits for it.
        self.fault: str | None = None
        self._fault_since = 0.0
        self._writable = asyncio.Event()
        self._writable.set()
        self._probe: asyncio.Task[None] | None = None

    @property
    def spooling(self) -> bool:
        return self.counters.parked

    @property
    def closing(self) -> bool:
        """Shutting down: no new events are taken."""
        return self._closing

    def journal_state(self) -> dict[str, Any]:
        """What /health says about the journal: whether it takes events, why not, and the room left."""
        state: dict[str, Any] = {"writable": self.fault is None, "bytes": self.journal.used_bytes,
                                 "max_bytes": self.journal.max_bytes}
        try:
            fs = os.statvfs(self.journal.directory)
            state["disk_free_bytes"] = fs.f_bavail * fs.f_frsize
        except OSError:
            pass
        if self.fault is not None:
            state["error"] = self.fault
            state["unwritable_seconds"] = round(time.monotonic() - self._fault_since, 1)
        return state

    # ------------------------------------------------------------ intake

    async def submit(self, event: Event) -> bool:
        return await self.submit_many([event]) == 1

    async def submit_many(self, events: list[Event], wait_on_fault: bool = True) -> int:
        """Journal the events (waiting for room), then count them; return how many were taken.

        While the journal cannot be written, waits for the probe to see it writable again
        (streams, files), or with ``wait_on_fault=False`` (HTTP, which answers 507)
        refuses the rest at once.
        """
        taken = 0
        while taken < len(events) and not self._closing:
            if self.fault is not None:
                if not wait_on_fault:
                    break
                await self._writable.wait()
                continue
            if not self.journal.space_for(events[taken].size):
                self._space.clear()
                await self._space.wait()
                continue
            taken += self._append(events[taken:])
        if taken < len(events):
            self._reject(events[taken:], "shutting_down" if self._closing else "journal_unwritable")
        return taken

    def submit_nowait(self, event: Event) -> bool:
        """For UDP, which cannot wait: a full or unwritable journal rejects the event."""
        if self._closing:
            self._reject([event], "shutting_down")
            return False
        if self.fault is not None:
            self._reject([event], "journal_unwritable")
            return False
        if not self.journal.space_for(event.size) or self._append([event]) == 0:
            self._reject([event], "journal_unwritable" if self.fault else "spool_full")
            return False
        return True

    def checkpoint(self, key: str, position: tuple[int, int, int, int]) -> None:
        """A file tailer's handled position, saved with the counters (journal.py, file checkpoints)."""
        self.journal.checkpoint(key, position)
        self._checkpoints_dirty = True

    def _append(self, events: list[Event]) -> int:
        try:
            taken = self.journal.append(events)
        except OSError as exc:  # nothing of it is in the journal (journal.py): refuse or wait, never spin
            self._enter_fault(exc)
            return 0
        for event in events[:taken]:
            self.counters.receive(event.source)
            event.mark_settled()  # durable: a file tailer may move its offset past it
        if taken:
            self._appended.set()
        return taken

    def _enter_fault(self, exc: OSError) -> None:
        text = f"{exc.strerror or exc} ({self.journal.directory})"
        if self.fault is None:
            log.error("cannot write the journal: %s. Refusing new events (HTTP 507, UDP rejected), TCP/TLS and "
                      "file inputs wait; trying again with back-off", text)
            self._fault_since = time.monotonic()
            self._writable.clear()
            if self._probe is None or self._probe.done():
                self._probe = asyncio.get_running_loop().create_task(self._probe_until_writable())
        self.fault = text

    async def _probe_until_writable(self) -> None:
        delay, longest = PROBE_BACKOFF
        while self.fault is not None and not self._closing:
            await asyncio.sleep(delay)
            try:
                self.journal.probe(PROBE_BYTES)
            except OSError as exc:
                self.fault = f"{exc.strerror or exc} ({self.journal.directory})"
                self.rlog.warning("journal_fault", "still cannot write the journal after %.0fs: %s",
                                  time.monotonic() - self._fault_since, self.fault)
                delay = min(delay * 2, longest)
                continue
            log.warning("the journal %s takes events again after %.1fs", self.journal.directory,
                        time.monotonic() - self._fault_since)
            self.fault = None
        self._writable.set()
        self._space.set()

    def _reject(self, events: list[Event], reason: str) -> None:
        for event in events:
            self.counters.reject_new(event.source, reason)
        final = reason not in TEMPORARY_REJECTIONS
        for event in events:
            event.mark_settled(final)

    def saturated(self) -> bool:
        """The journal is full or cannot be written: readers that can wait (files) should."""
        return self.fault is not None or not self.journal.space_for(self.config.batch_bytes)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        saved = self.journal.load()
        self.counters.restore(saved, self.journal.pending, dict(self.journal.pending_by_source))
        if self.journal.pending:
            log.warning("the journal holds %d event(s) from a previous run: sending them first", self.journal.pending)
        self._workers = [asyncio.create_task(self._work(n)) for n in range(self.config.workers)]
        self._saver = asyncio.create_task(self._save_loop())
        if self.journal.pending:
            self._appended.set()

    async def close(self, timeout: float) -> None:
        """Stop intake; send what the journal holds for up to ``timeout`` s; the rest waits for the next run."""
        self._closing = True
        self._space.set()
        self._writable.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.journal.pending and loop.time() < deadline and not self.counters.parked:
            await asyncio.sleep(0.05)
        tasks = [*self._workers, *(t for t in (self._saver, self._probe) if t is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.journal.pending:
            self.counters.parked = True  # on disk, sent by the next run
            log.warning("%d event(s) stay in the journal %s for the next run", self.journal.pending,
                        self.journal.directory)
        try:
            self.journal.sync()
            self.journal.save(self.counters.saved())
        except OSError as exc:  # the last save of this run; the journal's records still hold every event
            log.error("cannot save the journal state at shutdown: %s", exc)
        self.journal.close()

    async def _save_loop(self) -> None:
        """Save counters that changed without a chunk settling (rejections at intake, side facts)."""
        while True:
            await asyncio.sleep(self.config.save_interval)
            version = self.counters.version
            if version != self._saved_version or self._checkpoints_dirty:
                try:
                    self.journal.save(self.counters.saved())
                    self.journal.sync()
                except OSError as exc:
                    self.rlog.warning("journal", "cannot save the journal state: %s", exc)
                    continue
                self._saved_version, self._checkpoints_dirty = version, False

    # ------------------------------------------------------------ workers

    async def _work(self, number: int) -> None:
        while True:
            chunk = self.journal.next_chunk(self.config.batch_size, self.config.batch_bytes)
            if chunk is None:
                self._appended.clear()
                await self._appended.wait()
                continue
            if chunk.unreadable:
                chunk.outcomes["rejected:journal_unreadable"] = chunk.unreadable
            while True:
                try:
                    await self._deliver_chunk(chunk)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug here must not kill the worker: the chunk is tried again
                    log.exception("sending a chunk failed unexpectedly; trying it again")
                    chunk.outcomes.clear()
                    await asyncio.sleep(1.0)
            self.journal.settle(chunk, self._commit)
            self._space.set()

    def _commit(self, chunks: list[Chunk]) -> dict[str, Any]:
        outcomes: Counter[str] = Counter()
        by_source: Counter[str] = Counter()
        for chunk in chunks:
            outcomes.update(chunk.outcomes)
            by_source.update(event.source for event in chunk.events)
        self.counters.settle(dict(outcomes), dict(by_source))
        return self.counters.saved()

    async def _deliver_chunk(self, chunk: Chunk) -> None:
        """Send until every event of the chunk is settled; retries without end (the journal keeps them)."""
        backoff = 0.5
        pending = chunk.events
        while pending:
            pending = await self._deliver(pending, chunk)
            if pending:
                if self._unavailable_since is None:
                    self._unavailable_since = time.monotonic()
                if not self.counters.parked:
                    log.warning("cluster %s unavailable beyond the %gs retry budget: events wait in the journal %s",
                                self.cluster.url, self.config.retry_budget, self.journal.directory)
                self.counters.parked = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.replay_backoff_max)
        if self.counters.parked:
            log.warning("cluster %s answers again: sending the journal", self.cluster.url)
        self.counters.parked = False
        self._unavailable_since = None

    # ------------------------------------------------------------ delivery

    async def _deliver(self, events: list[Event], chunk: Chunk) -> list[Event]:
        """Send until every event is settled or the retry budget is spent; return the unsent."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.config.retry_budget
        delay = 0.1
        pending = events
        while pending:
            try:
                result = await loop.run_in_executor(None, self._bulk, pending)
            except Unavailable as exc:
                if time.monotonic() + delay > deadline:
                    self.rlog.warning("unavailable", "bulk to %s failed (%s): %d event(s) wait in the journal",
                                      self.cluster.url, exc, len(pending))
                    return pending
                self.counters.note("retries")
                log.debug("bulk failed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.max_backoff)
                continue
            chunk.outcomes["indexed"] = chunk.outcomes.get("indexed", 0) + len(result.indexed)
            chunk.outcomes["failed"] = chunk.outcomes.get("failed", 0) + len(result.failed)
            if result.failed and self.protector is not None:
                await self._seal_failures(result.failed)
            if result.refused:
                await self._divert(result.refused, chunk)
            pending = result.retry
            if pending:
                if time.monotonic() + delay > deadline:
                    return pending
                self.counters.note("retries")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.max_backoff)
        return []

    def _request(self, path: str, body: str) -> Any:
        try:
            return self.cluster.request("POST", path, body=body)
        except PacsguardError as exc:  # ConnectionProblem, ApiError (429, 5xx, 401, ...)
            raise Unavailable(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a broken response must not kill the worker
            raise Unavailable(f"{type(exc).__name__}: {exc}") from None

    def _bulk(self, events: list[Event]) -> BulkResult:
        """One bulk request (runs in a thread: opensearch-py is synchronous)."""
        body = "".join(f'{{"create":{{"_id":"{e.id}"}}}}\n{e.doc_line}\n' for e in events)
        response = self._request(f"/{self.data_stream}/_bulk", body)
        items = response.get("items") if isinstance(response, dict) else None
        if not isinstance(items, list) or len(items) != len(events):
            raise Unavailable(f"bulk answered {len(items or [])} items for {len(events)} events")
        result = BulkResult()
        for event, item in zip(events, items):
            info: dict[str, Any] = item.get("create") or next(iter(item.values()), {})
            status = int(info.get("status", 0))
            if status in (200, 201, 409):
                (result.failed if info.get("_index") == self.failures_index else result.indexed).append(event)
            elif status == 429 or status >= 500 or status == 0:
                result.retry.append(event)
            else:
                detail = f"HTTP {status} {_item_error(info.get('error'))}"[:2000]
                if any(signature in detail for signature in PIPELINE_SKIPPED):
                    self.rlog.warning("skipped", "the data stream took event(s) without running its pipeline (%s): "
                                      "a node still starting; retrying them", detail)
                    result.retry.append(event)
                else:
                    result.refused.append((event, detail))
        return result

    async def _seal_failures(self, events: list[Event]) -> None:
        """Store the sealed original next to each failure the pipeline wrote (which keeps none).

        Retried until stored: the chunk does not settle before, so a crash sends
        the events again, they meet 409s in the failure index and come here again.
        """
        assert self.protector is not None
        loop = asyncio.get_running_loop()
        now = _now()
        lines = []
        for event in events:
            companion = self.protector.companion(event.id, safe_original(event.message), now)
            lines.append(json.dumps({"create": {"_index": self.failures_index, "_id": event.id + SEALED_SUFFIX}}))
            lines.append(json.dumps(companion, ensure_ascii=False))
        body = "\n".join(lines) + "\n"
        delay = 0.2
        while True:
            try:
                response = await loop.run_in_executor(None, self._request, "/_bulk", body)
                statuses = [int((i.get("create") or {}).get("status", 0)) for i in response.get("items", [])]
                if len(statuses) == len(events) and all(s in (200, 201, 409) for s in statuses):
                    return
                self.rlog.warning("seal", "storing sealed originals answered %s: retrying", sorted(set(statuses)))
            except Unavailable as exc:
                self.rlog.warning("seal", "storing sealed originals failed (%s): retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.replay_backoff_max)

    async def _divert(self, refused: list[tuple[Event, str]], chunk: Chunk) -> None:
        """Items the data stream refused for good go to the failure index with the reason."""
        loop = asyncio.get_running_loop()
        now = _now()
        lines = []
        for event, reason in refused:
            self.rlog.warning("refused", "the data stream refused event %s (%s): keeping it in %s", event.id, reason,
                              self.failures_index)
            doc: dict[str, Any] = {
                "@timestamp": now, "event": {"ingested": now, "dataset": "pacs.audit"},
                "error": {"message": f"refused by the data stream: {reason}", "type": "bulk_item_refused"}}
            if self.protector is not None:
                sealed = self.protector.protect(event.id, safe_original(event.message))
                doc["event"].update(sealed["event"])
                doc["pacsguard"] = sealed["pacsguard"]
            else:
                doc["event"].update(fingerprint(event.message))
            lines.append(json.dumps({"create": {"_index": self.failures_index, "_id": event.id}}))
            lines.append(json.dumps(doc, ensure_ascii=False))
        body = "\n".join(lines) + "\n"
        events = [event for event, _ in refused]
        try:
            response = await loop.run_in_executor(None, self._request, "/_bulk", body)
            statuses = [int((i.get("create") or {}).get("status", 0)) for i in response.get("items", [])]
        except Unavailable as exc:
            log.error("could not write refused events to %s: %s", self.failures_index, exc)
            statuses = []
        stored = sum(1 for s in statuses if s in (200, 201, 409))
        chunk.outcomes["failed"] = chunk.outcomes.get("failed", 0) + stored
        if len(events) - stored:
            chunk.outcomes["rejected:refused_by_cluster"] = (chunk.outcomes.get("rejected:refused_by_cluster", 0)
                                                            + len(events) - stored)
