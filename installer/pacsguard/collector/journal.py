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

A full or failing disk (issue 16, item 5): an ``append`` that cannot be written
whole is undone (each segment it touched is cut back to its size before), so
a refused event is never half in the journal and a later retry cannot store
it twice; the caller gets the ``OSError``. Freed space is real: the active
segment is closed once ``rotate_settled_bytes`` of it are settled, so a small
pending amount never pins a large segment, and a closed segment whose events
are all settled is deleted. The state file is small; a ``reserve`` file of
``RESERVE_BYTES`` kept beside it is given up when the disk is full, so the
offsets can still be saved and settled segments deleted.

File checkpoints: a file tailer's position (how far its file is handled) is
saved in the same state file as the counters, and every journaled line of a
file carries its position, so after ``kill -9`` a tailer resumes exactly after
the last line the journal holds or counted: no line is read and counted twice
(issue 16, item 7).
Used from the event loop only.
"""

from __future__ import annotations

import errno
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
RESERVE_FILE = "reserve.bin"
RESERVE_BYTES = 64 * 1024
PROBE_FILE = "probe.tmp"


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


def encode(event: Event, at: list[Any] | None = None) -> bytes:
    record: dict[str, Any] = {"id": event.id, "source": event.source, "message": event.message}
    if at is not None:
        record["at"] = at
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Journal:
    def __init__(self, directory: Path, max_bytes: int = 512 * 1024 * 1024,
                 segment_bytes: int = 64 * 1024 * 1024, fsync_interval: float = 0.2,
                 rotate_settled_bytes: int = 256 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // 4, 4096))
        self.rotate_settled_bytes = rotate_settled_bytes
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
        # file key -> [seq, dev, inode, generation, offset]: how far each tailed file is handled
        self.checkpoints: dict[str, list[int]] = {}
        self._checkpoint_seq = 0

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
        for key, value in (state.get("checkpoints") or {}).items():
            if isinstance(value, list) and len(value) == 5:
                self.checkpoints[str(key)] = [int(v) for v in value]
        self._checkpoint_seq = max([c[0] for c in self.checkpoints.values()], default=0)
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
                        record = json.loads(line)
                        source = str(record.get("source", "journal"))
                        self._restore_checkpoint(record.get("at"))
                    except (ValueError, AttributeError, TypeError):
                        source = "journal"
                    self.pending_by_source[source] = self.pending_by_source.get(source, 0) + 1
        if self._segments:
            self._read_segment = self._segments[0]
            self._read_offset = self._settled[self._segments[0]]
        self._keep_reserve()
        counters = state.get("counters")
        return counters if isinstance(counters, dict) else {}

    def _restore_checkpoint(self, at: Any) -> None:
        """A journaled file line written after the last state save: its position is newer than the saved one."""
        if isinstance(at, list) and len(at) == 6:
            key, seq, *position = at
            if int(seq) > self.checkpoints.get(str(key), [0])[0]:
                self.checkpoints[str(key)] = [int(seq), *map(int, position)]
                self._checkpoint_seq = max(self._checkpoint_seq, int(seq))

    def checkpoint(self, key: str, position: tuple[int, int, int, int]) -> None:
        """A file tailer handled its file up to ``position`` (dev, inode, generation, offset); saved with the state."""
        self._checkpoint_seq += 1
        self.checkpoints[key] = [self._checkpoint_seq, *position]

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
        """Write events in order and hand them to the kernel; return how many fitted (a prefix).

        All or nothing on an I/O error (disk full, ...): what this call wrote is cut
        off again and the OSError raised, so nothing of it stays in the journal.
        """
        if not events:
            return 0
        total = self.used_bytes
        lines: list[bytes] = []
        marks: list[tuple[str, list[int]]] = []
        seq = self._checkpoint_seq
        for event in events:
            at = None
            if event.checkpoint is not None:
                key, position = event.checkpoint
                at = [key, seq + 1, *position]
            line = encode(event, at)
            if total + len(line) > self.max_bytes and total > 0:
                break
            if at is not None:
                seq += 1
                marks.append((str(at[0]), at[1:]))
            total += len(line)
            lines.append(line)
        touched: list[tuple[int, int, bool]] = []  # segment, its size before, created by this call
        try:
            index = 0
            while index < len(lines):
                created = self._writer is None
                writer, number = self._active_writer()
                touched.append((number, self._sizes[number], created))
                start = index
                size = self._sizes[number]
                while index < len(lines) and (index == start or size + len(lines[index]) <= self.segment_bytes):
                    size += len(lines[index])
                    index += 1
                _write_all(writer.fileno(), b"".join(lines[start:index]))  # in the kernel: kill -9 cannot take it
                self._sizes[number] = size
                if size >= self.segment_bytes:
                    self._close_writer()
            self._dirty_sync = True
            self._maybe_fsync()
        except OSError:
            self._undo(touched)
            raise
        self.pending += len(lines)
        for event in events[: len(lines)]:
            self.pending_by_source[event.source] = self.pending_by_source.get(event.source, 0) + 1
        for key, mark in marks:
            self.checkpoints[key] = mark
        self._checkpoint_seq = seq
        return len(lines)

    def _undo(self, touched: list[tuple[int, int, bool]]) -> None:
        """Cut every segment an append touched back to its size before (a refused event leaves no trace)."""
        for number, before, created in reversed(touched):
            if number == self._writer_segment:
                self._writer_close_quietly()
            path = self._path(number)
            try:
                if created and before == 0:
                    path.unlink(missing_ok=True)
                else:
                    os.truncate(path, before)
            except OSError as exc:  # cannot even cut back: the lines stay, and are read (their ids keep it exact)
                log.error("journal %s: could not undo a failed write (%s)", path.name, exc)
                continue
            if created and before == 0:
                self._segments.remove(number)
                self._sizes.pop(number, None)
                self._settled.pop(number, None)
                if self._read_segment == number:
                    self._advance_read(number)
            else:
                self._sizes[number] = before

    def _writer_close_quietly(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                pass
        self._writer, self._writer_segment = None, None

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
            self._writer = self._path(number).open("ab", buffering=0)
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
        writer = self._writer_segment
        if writer is not None and self._settled.get(writer, 0) >= self.rotate_settled_bytes:
            self._close_writer()  # its settled part can go as soon as the rest of it settles
        try:
            self._save_state(counters_state(ready))
        except OSError as exc:  # nothing is deleted before the state names it settled: retried by the next save
            log.error("journal %s: cannot save its state (%s): settled segments stay until it can",
                      self.directory, exc)
            return ready
        self._collect()
        return ready

    def _collect(self) -> None:
        """Delete closed segments whose every event is settled (after the state file names them so)."""
        for number in list(self._segments):
            if (number != self._writer_segment and self._settled.get(number, 0) >= self._sizes.get(number, 0)
                    and not any(c.segment == number for c in self._chunks)
                    and (number != self._read_segment or self._read_offset >= self._sizes.get(number, 0))):
                self._path(number).unlink(missing_ok=True)
                self._segments.remove(number)
                self._sizes.pop(number, None)
                self._settled.pop(number, None)
                if number == self._read_segment:
                    self._advance_read(number)
        self._keep_reserve()

    def save(self, counters: dict[str, Any]) -> None:
        """Save the offsets with counters that changed outside chunks (rejections at intake); raises OSError."""
        self._save_state(counters)
        self._collect()

    def _save_state(self, counters: dict[str, Any]) -> None:
        state = {"settled": {str(n): self._settled.get(n, 0) for n in self._segments}, "counters": counters,
                 "checkpoints": self.checkpoints}
        data = json.dumps(state)
        try:
            self._replace_state(data)
        except OSError as exc:
            reserve = self.directory / RESERVE_FILE
            if exc.errno != errno.ENOSPC or not reserve.exists():
                raise
            reserve.unlink()  # the disk is full: the reserve's blocks hold the state, deletions follow
            log.warning("journal %s: disk full, used the reserve to save the journal state", self.directory)
            self._replace_state(data)

    def _replace_state(self, data: str) -> None:
        tmp = self.directory / (STATE_FILE + ".tmp")
        try:
            tmp.write_text(data)
            os.replace(tmp, self.directory / STATE_FILE)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def _keep_reserve(self) -> None:
        """Keep RESERVE_BYTES on the disk for the state file (given up by _save_state when the disk is full)."""
        reserve = self.directory / RESERVE_FILE
        try:
            if not reserve.exists() or reserve.stat().st_size < RESERVE_BYTES:
                with reserve.open("wb") as handle:
                    handle.write(b"\0" * RESERVE_BYTES)
        except OSError:
            reserve.unlink(missing_ok=True)  # no room yet: tried again after the next deletion

    def probe(self, size: int) -> None:
        """Whether ``size`` bytes can be written next to the journal now: raises the OSError if not."""
        path = self.directory / PROBE_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, b"\0" * size)
            finally:
                os.close(fd)
        finally:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the writer; segments whose every event is settled go (their offsets are saved already)."""
        try:
            self._close_writer()
        except OSError as exc:
            log.error("journal %s: closing the active segment failed: %s", self.directory, exc)
            self._writer_close_quietly()
        if not self._chunks:
            self._collect()

    def _path(self, number: int) -> Path:
        return self.directory / f"seg-{number:09d}.ndjson"
