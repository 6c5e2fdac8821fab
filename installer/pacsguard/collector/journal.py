"""The write-ahead journal: every accepted event is on disk before the collector reads on or answers.

A directory of NDJSON segment files ``seg-<n>.ndjson`` (one event a line:
``{"id", "source", "message"}``) in arrival order, and one state file
``journal.json`` holding, per segment, the byte offset up to which its events
are settled, and the counters of exactly those settled events. Both are
replaced together (write a temporary file, rename), so after ``kill -9`` the
state names a prefix of the journal whose outcomes are counted, and every
event past it is sent again under its own ``_id``: one that did land comes
back as a 409 and is counted then, never twice, never stored twice.

Why not a memory queue in front of a spool: events in memory die with the
process (the issue measured 350 of 20,000 lost to ``kill -9``). Here a source
hands over an event by appending it (a ``write`` to the kernel, which survives
the process), and only then reads its next bytes (TCP, TLS, files) or answers
(HTTP 202). The sender reads the journal back (the page cache makes that
cheap) in chunks, several in flight, and settles them in order.

Durability: ``write`` survives a crash of the process; ``fsync`` (at most every
``fsync_interval`` seconds, and on close) bounds what a power loss can take.

The total size is capped: ``space_for`` tells sources that can wait (TCP,
HTTP, files) to wait, and UDP, which cannot, rejects with a counter.
Used from the event loop only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pacsguard.collector.events import Event

log = logging.getLogger("pacsguard.collector")
_SEGMENT = re.compile(r"^seg-(\d{9})\.ndjson$")
STATE_FILE = "journal.json"


@dataclass
class Chunk:
    """Events read from one segment, in order, and where that segment's settled offset goes once they are."""

    seq: int
    segment: int
    end: int
    events: list[Event]
    size: int = 0
    unreadable: int = 0  # lines that no longer parse (disk damage): settled as rejected
    done: bool = False
    outcomes: dict[str, int] = field(default_factory=dict)  # indexed / failed / rejected:<reason>


def encode(event: Event) -> bytes:
    return (json.dumps({"id": event.id, "source": event.source, "message": event.message},
                       ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")


class Journal:
    def __init__(self, directory: Path, max_bytes: int = 512 * 1024 * 1024,
                 segment_bytes: int = 64 * 1024 * 1024, fsync_interval: float = 0.2) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // 4, 4096))
        self.fsync_interval = fsync_interval
        self._segments: list[int] = []  # oldest first
        self._sizes: dict[int, int] = {}  # bytes written per segment
        self._settled: dict[int, int] = {}  # bytes settled per segment (durable in the state file)
        self._read_segment: int | None = None
        self._read_offset = 0
        self._writer: IO[bytes] | None = None
        self._writer_segment: int | None = None
        self._chunks: list[Chunk] = []  # handed out, not yet settled in order
        self._seq = 0
        self._last_fsync = 0.0
        self._dirty_sync = False
        self.pending = 0  # events written and not yet settled
        self.pending_by_source: dict[str, int] = {}

    # ------------------------------------------------------------ start

    def load(self) -> dict[str, Any]:
        """Open the directory; return the saved counters (of settled events) or {} on a first run.

        ``pending`` and ``pending_by_source`` then hold what a previous run left unsettled.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {}
        try:
            state = json.loads((self.directory / STATE_FILE).read_text())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.error("journal state %s unreadable (%s): replaying every segment (409s keep it exact)",
                      self.directory / STATE_FILE, exc)
        positions = {int(k): int(v) for k, v in (state.get("settled") or {}).items()}
        for path in sorted(self.directory.iterdir()):
            match = _SEGMENT.match(path.name)
            if not match:
                continue
            number = int(match[1])
            size = self._trim_partial_line(path)
            position = min(positions.get(number, 0), size)
            if position >= size > 0:
                path.unlink(missing_ok=True)
                continue
            self._segments.append(number)
            self._sizes[number] = size
            self._settled[number] = position
            with path.open("rb") as handle:
                handle.seek(position)
                for line in handle:
                    if not line.strip():
                        continue
                    self.pending += 1
                    try:
                        source = str(json.loads(line).get("source", "journal"))
                    except (ValueError, AttributeError):
                        source = "journal"
                    self.pending_by_source[source] = self.pending_by_source.get(source, 0) + 1
        if self._segments:
            self._read_segment = self._segments[0]
            self._read_offset = self._settled[self._segments[0]]
        counters = state.get("counters")
        return counters if isinstance(counters, dict) else {}

    @staticmethod
    def _trim_partial_line(path: Path) -> int:
        """A crash mid-append leaves a line without its newline: that event was never acknowledged."""
        size = path.stat().st_size
        if size == 0:
            return 0
        with path.open("rb+") as handle:
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return size
            # Find the last newline by reading backwards in blocks (a segment may be large).
            block = 1 << 16
            end = size
            keep = 0
            while end > 0:
                start = max(0, end - block)
                handle.seek(start)
                data = handle.read(end - start)
                found = data.rfind(b"\n")
                if found >= 0:
                    keep = start + found + 1
                    break
                end = start
            handle.truncate(keep)
        log.warning("journal %s: dropped a partly written last line (%d bytes)", path.name, size - keep)
        return keep

    # ------------------------------------------------------------ facts

    @property
    def used_bytes(self) -> int:
        return sum(self._sizes[n] - self._settled.get(n, 0) for n in self._segments)

    def space_for(self, size: int) -> bool:
        # An event larger than the cap still fits in an empty journal, or it could never pass.
        return self.used_bytes + size <= self.max_bytes or self.used_bytes == 0

    def empty(self) -> bool:
        return self.pending == 0

    # ------------------------------------------------------------ write

    def append(self, events: list[Event]) -> int:
        """Write events in order and hand them to the kernel; return how many fitted (a prefix)."""
        if not events:
            return 0
        total = self.used_bytes
        lines: list[bytes] = []
        for event in events:
            line = encode(event)
            if total + len(line) > self.max_bytes and total > 0:
                break
            total += len(line)
            lines.append(line)
        index = 0
        while index < len(lines):
            writer, number = self._active_writer()
            written = 0
            while index < len(lines) and (written == 0 or self._sizes[number] + len(lines[index]) <= self.segment_bytes):
                writer.write(lines[index])
                self._sizes[number] += len(lines[index])
                written += 1
                index += 1
            writer.flush()  # in the kernel now: a kill -9 of this process cannot take it
            if self._sizes[number] >= self.segment_bytes:
                self._close_writer()
        self._dirty_sync = True
        self._maybe_fsync()
        self.pending += len(lines)
        for event in events[: len(lines)]:
            self.pending_by_source[event.source] = self.pending_by_source.get(event.source, 0) + 1
        return len(lines)

    def _maybe_fsync(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._writer is not None and self._dirty_sync and (force or now - self._last_fsync >= self.fsync_interval):
            os.fsync(self._writer.fileno())
            self._last_fsync = now
            self._dirty_sync = False

    def sync(self) -> None:
        self._maybe_fsync(force=True)

    def _active_writer(self) -> tuple[IO[bytes], int]:
        if self._writer is None or self._writer_segment is None:
            number = (max(self._segments) + 1) if self._segments else 1
            self._writer = (self.directory / f"seg-{number:09d}.ndjson").open("ab")
            self._writer_segment = number
            self._segments.append(number)
            self._sizes[number] = 0
            self._settled[number] = 0
            if self._read_segment is None:
                self._read_segment, self._read_offset = number, 0
        return self._writer, self._writer_segment

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._maybe_fsync(force=True)
            self._writer.close()
        self._writer, self._writer_segment = None, None

    # ------------------------------------------------------------ read

    def next_chunk(self, max_events: int, max_bytes: int) -> Chunk | None:
        """The next unread events, in order (at most one segment per chunk); None when caught up."""
        while self._read_segment is not None:
            number = self._read_segment
            if number not in self._sizes:
                self._advance_read(number)
                continue
            if self._read_offset >= self._sizes[number]:
                if number == self._writer_segment or not self._later(number):
                    return None
                self._advance_read(number)
                continue
            events: list[Event] = []
            unreadable = 0
            size = 0
            end = self._read_offset
            with self._path(number).open("rb") as handle:
                handle.seek(self._read_offset)
                while len(events) < max_events and size < max_bytes and end < self._sizes[number]:
                    line = handle.readline()
                    if not line.endswith(b"\n"):
                        break
                    end += len(line)
                    size += len(line)
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        events.append(Event(record["id"], record["message"], record.get("source", "journal")))
                    except (ValueError, KeyError, TypeError):
                        unreadable += 1
                        log.error("journal %s: an unreadable line at byte %d", self._path(number).name,
                                  end - len(line))
            self._read_offset = end
            self._seq += 1
            chunk = Chunk(self._seq, number, end, events, size, unreadable)
            self._chunks.append(chunk)
            return chunk
        return None

    def _later(self, number: int) -> bool:
        return any(n > number for n in self._segments)

    def _advance_read(self, number: int) -> None:
        later = [n for n in self._segments if n > number]
        self._read_segment = later[0] if later else None
        self._read_offset = self._settled.get(later[0], 0) if later else 0

    def rewind(self) -> None:
        """Forget chunks handed out and not settled: they are read again (the sender restarts its readers)."""
        self._chunks.clear()
        if self._segments:
            self._read_segment = self._segments[0]
            self._read_offset = self._settled[self._segments[0]]

    # ------------------------------------------------------------ settle

    def settle(self, chunk: Chunk, counters_state: Any) -> list[Chunk]:
        """Mark a chunk done; settle every done chunk at the head, in order; return those settled.

        ``counters_state`` is called with the chunks about to be settled and
        returns the counters to save with the new offsets.
        """
        chunk.done = True
        ready: list[Chunk] = []
        while self._chunks and self._chunks[0].done:
            ready.append(self._chunks.pop(0))
        if not ready:
            return []
        for done in ready:
            self._settled[done.segment] = max(self._settled.get(done.segment, 0), done.end)
            self.pending -= len(done.events) + done.unreadable
            for event in done.events:
                self.pending_by_source[event.source] = self.pending_by_source.get(event.source, 1) - 1
        finished = [n for n in self._segments
                    if n != self._writer_segment and self._settled.get(n, 0) >= self._sizes.get(n, 0)
                    and not any(c.segment == n for c in self._chunks) and n != self._read_segment]
        self._save_state(counters_state(ready))
        for number in finished:  # after the state names them settled: a crash in between replays nothing
            self._path(number).unlink(missing_ok=True)
            self._segments.remove(number)
            self._sizes.pop(number, None)
            self._settled.pop(number, None)
        return ready

    def save(self, counters: dict[str, Any]) -> None:
        """Save the offsets with counters that changed outside chunks (rejections at intake)."""
        self._save_state(counters)

    def _save_state(self, counters: dict[str, Any]) -> None:
        state = {"settled": {str(n): self._settled.get(n, 0) for n in self._segments}, "counters": counters}
        tmp = self.directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.directory / STATE_FILE)

    def close(self) -> None:
        """Close the writer; segments whose every event is settled go (their offsets are saved already)."""
        self._close_writer()
        for number in list(self._segments):
            if self._settled.get(number, 0) >= self._sizes.get(number, 0) and not self._chunks:
                self._path(number).unlink(missing_ok=True)
                self._segments.remove(number)
                self._sizes.pop(number, None)
                self._settled.pop(number, None)

    def _path(self, number: int) -> Path:
        return self.directory / f"seg-{number:09d}.ndjson"
