"""Batches events into bulk requests to the data stream; spools when the cluster is away.

Flow:  sources -> EventQueue (bounded) -> workers -> POST <data stream>/_bulk
                                               \\-> Spool (disk) -> replayer -> _bulk

- Every item is ``create`` with the event's own ``_id``: a retry can never
  duplicate; a 409 means an earlier attempt stored it.
- Per item, ``_index`` tells where the pipeline put it: the failure index
  (failed) or a backing index of the data stream (indexed).
- 429s and connection errors are retried with exponential back-off for at most
  ``retry_budget`` seconds; then the batch goes to the spool and the sender
  switches to spooling: later batches go straight to disk, behind the spooled
  ones, until the replayer has sent the spool in order and catches up.
- An item the cluster refuses for good (e.g. a mapping conflict after the
  pipeline) is written to the failure index with the reason: nothing is
  silently lost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pacsguard.collector.counters import Counters, Origin
from pacsguard.collector.events import Event
from pacsguard.collector.queue import EventQueue
from pacsguard.collector.ratelog import RateLimitedLog
from pacsguard.collector.spool import Spool
from pacsguard.core.connection import Cluster
from pacsguard.core.errors import PacsguardError

log = logging.getLogger("pacsguard.collector")


@dataclass(frozen=True)
class SenderConfig:
    batch_size: int = 500
    batch_bytes: int = 8 * 1024 * 1024
    flush_interval: float = 1.0  # longest wait to fill a batch
    workers: int = 2  # bulk requests in flight at once
    retry_budget: float = 5.0  # seconds of retries before a batch goes to the spool
    max_backoff: float = 2.0
    replay_backoff_max: float = 5.0  # probing a cluster that is away
    queue_events: int = 20_000
    queue_bytes: int = 64 * 1024 * 1024


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
TEMPORARY_REJECTIONS = frozenset({"shutting_down", "spool_full", "queue_full"})


class Unavailable(Exception):
    """The whole bulk request failed (unreachable, 429, 5xx, auth): retry, then spool."""


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
    if message.startswith('{"pacsguard_format": "atna"'):
        try:
            envelope = json.loads(message)
            return str(envelope.get("original") or "")
        except ValueError:
            return ""
    return message


class Sender:
    def __init__(self, cluster: Cluster, data_stream: str, failures_index: str, counters: Counters,
                 spool: Spool, config: SenderConfig) -> None:
        self.cluster = cluster
        self.data_stream = data_stream
        self.failures_index = failures_index
        self.counters = counters
        self.spool = spool
        self.config = config
        self.queue = EventQueue(config.queue_events, config.queue_bytes)
        self.spooling = False
        self._workers: list[asyncio.Task[None]] = []
        self._replayer: asyncio.Task[None] | None = None
        self._spool_has_data = asyncio.Event()
        self._in_flight: set[int] = set()  # ids of live batches being sent
        self._batches: dict[int, list[Event]] = {}
        self._closing = False
        self.rlog = RateLimitedLog(log, interval=30.0)

    # ------------------------------------------------------------ intake

    async def submit(self, event: Event) -> bool:
        """Count the event as received and queue it, waiting for room (back-pressure)."""
        self.counters.receive(event.source)
        if await self.queue.put(event):
            return True
        self._reject([event], "in_flight", "shutting_down")
        return False

    def submit_nowait(self, event: Event) -> bool:
        """For UDP, which cannot wait: a full queue rejects the event."""
        self.counters.receive(event.source)
        if self.queue.try_put(event):
            return True
        self._reject([event], "in_flight", "queue_full" if not self.queue.closed else "shutting_down")
        return False

    def saturated(self) -> bool:
        """Spooling and the spool is full: readers that can wait (files) should."""
        return self.spooling and self.spool.full_for(self.config.batch_bytes)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        resumed = self.spool.load()
        if resumed:
            self.counters.resume(resumed)
            self.spooling = True
            log.warning("spool holds %d event(s) from a previous run: replaying them first", resumed)
        self._workers = [asyncio.create_task(self._work(n)) for n in range(self.config.workers)]
        self._replayer = asyncio.create_task(self._replay())
        if resumed:
            self._spool_has_data.set()

    async def close(self, timeout: float) -> None:
        """Stop intake, send what is queued, spool what could not be sent within ``timeout``."""
        self._closing = True
        self.queue.close()
        done, pending = await asyncio.wait(self._workers, timeout=timeout) if self._workers else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            # Batches cut off mid-request: their outcome is unknown, so spool
            # the unsettled events; if the request did land, replay meets 409s.
            for batch in self._batches.values():
                self._to_spool([e for e in batch if not e.settled], "in_flight")
            self._batches.clear()
        for task in done:
            if task.exception() is not None:
                log.error("sender worker crashed: %r", task.exception())
        leftover = self.queue.drain()
        if leftover:
            self._to_spool(leftover, "in_flight")
        if self._replayer is not None:
            self._replayer.cancel()
            await asyncio.gather(self._replayer, return_exceptions=True)
        self.spool.close()

    # ------------------------------------------------------------ workers

    async def _work(self, number: int) -> None:
        while True:
            batch = await self.queue.get_batch(self.config.batch_size, self.config.batch_bytes,
                                               self.config.flush_interval)
            if not batch:
                if self.queue.closed and len(self.queue) == 0:
                    return
                continue
            if self.spooling:
                self._to_spool(batch, "in_flight")
                continue
            key = id(batch)
            self._batches[key] = batch
            try:
                leftover = await self._deliver(batch, "in_flight")
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not strand events in flight
                log.exception("sending a batch failed unexpectedly: spooling it")
                leftover = [e for e in batch if not e.settled]
            finally:
                self._batches.pop(key, None)
            if leftover:
                self._to_spool(leftover, "in_flight")

    def _to_spool(self, events: list[Event], origin: Origin) -> None:
        if not events:
            return
        if not self.spooling:
            log.warning("cluster %s unavailable beyond the %gs retry budget: spooling to %s",
                        self.cluster.url, self.config.retry_budget, self.spool.directory)
        self.spooling = True
        try:
            refused = self.spool.append(events)
        except OSError as exc:  # disk full, permissions: nothing else can keep them
            log.error("cannot write the spool %s: %s", self.spool.directory, exc)
            refused = events
        kept = len(events) - len(refused)
        self.counters.settle(origin, "spooled", kept)
        for event in events[:kept]:
            event.mark_settled()
        if refused:
            log.error("spool full (%d bytes max): rejected %d event(s)", self.spool.max_bytes, len(refused))
            self._reject(refused, origin, "spool_full")
        self._spool_has_data.set()

    def _reject(self, events: list[Event], origin: Origin, reason: str) -> None:
        self.counters.settle(origin, "rejected", len(events), reason)
        final = reason not in TEMPORARY_REJECTIONS
        for event in events:
            event.mark_settled(final)

    # ------------------------------------------------------------ replay

    async def _replay(self) -> None:
        backoff = 0.5
        while True:
            await self._spool_has_data.wait()
            chunk = self.spool.next_chunk(self.config.batch_size, self.config.batch_bytes)
            if chunk is None:
                # Caught up: new batches may go straight to the cluster again.
                if self.spool.empty():
                    if self.spooling:
                        log.warning("spool replayed: sending directly to %s again", self.cluster.url)
                    self.spooling = False
                    self._spool_has_data.clear()
                else:
                    await asyncio.sleep(0.05)
                continue
            if chunk.unreadable:
                self.counters.settle("spooled", "rejected", chunk.unreadable, "spool_unreadable")
            pending = chunk.events
            while pending:
                pending = await self._deliver(pending, "spooled")
                if pending:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.config.replay_backoff_max)
            backoff = 0.5
            self.spool.ack(chunk)

    # ------------------------------------------------------------ delivery

    async def _deliver(self, events: list[Event], origin: Origin) -> list[Event]:
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
                    self.rlog.warning("unavailable", "bulk to %s failed (%s): %d event(s) go to the spool or wait "
                                      "for the next replay attempt", self.cluster.url, exc, len(pending))
                    return pending
                self.counters.note("retries")
                log.debug("bulk failed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.max_backoff)
                continue
            self._settle(result.indexed, origin, "indexed")
            self._settle(result.failed, origin, "failed")
            if result.refused:
                await self._divert(result.refused, origin)
            pending = result.retry
            if pending:
                if time.monotonic() + delay > deadline:
                    return pending
                self.counters.note("retries")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.max_backoff)
        return []

    def _settle(self, events: list[Event], origin: Origin, outcome: Any) -> None:
        if not events:
            return
        self.counters.settle(origin, outcome, len(events))
        for event in events:
            event.mark_settled()

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

    async def _divert(self, refused: list[tuple[Event, str]], origin: Origin) -> None:
        """Items the data stream refused for good go to the failure index with the reason."""
        loop = asyncio.get_running_loop()
        now = _now()
        lines = []
        for event, reason in refused:
            self.rlog.warning("refused", "the data stream refused event %s (%s): keeping it in %s", event.id, reason,
                              self.failures_index)
            doc = {"@timestamp": now,
                   "event": {"original": safe_original(event.message), "ingested": now, "dataset": "pacs.audit"},
                   "error": {"message": f"refused by the data stream: {reason}", "type": "bulk_item_refused"}}
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
        stored = [e for e, s in zip(events, statuses) if s in (200, 201, 409)]
        lost = [e for e in events if e not in stored]
        self._settle(stored, origin, "failed")
        if lost:
            self._reject(lost, origin, "refused_by_cluster")
