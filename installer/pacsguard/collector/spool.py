"""A bounded on-disk spool for events the cluster could not take.

A directory of NDJSON segment files ``seg-<n>.ndjson``, one event per line
(``{"id": ..., "source": ..., "message": ...}``), written in arrival order and
replayed oldest first. Each segment has a ``seg-<n>.pos`` file holding the byte
offset up to which its events were settled, so a restart neither loses nor
re-counts them; should a crash come between a bulk and the .pos update, the
re-sent events meet their own ``_id`` and come back as 409s (no duplicates).

The total size is capped (default 512 MiB). When full, ``append`` takes what
fits and returns the rest, which the caller rejects with a counter: new events
are refused rather than spooled ones dropped.

Used from the event loop only. Appends are flushed and fsynced per batch: a
spooled event is one the collector has promised to deliver.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pacsguard.collector.events import Event

log = logging.getLogger("pacsguard.collector")
_SEGMENT = re.compile(r"^seg-(\d{9})\.ndjson$")


@dataclass
class Chunk:
    """Events read from one segment, and where the segment's read position goes once they settle."""

    segment: int
    end: int
    events: list[Event]
    unreadable: int = 0  # lines that no longer parse (disk damage): settled as rejected


class Spool:
    def __init__(self, directory: Path, max_bytes: int = 512 * 1024 * 1024,
                 segment_bytes: int = 16 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // 4, 4096))
        self._segments: list[int] = []  # oldest first
        self._sizes: dict[int, int] = {}  # bytes written per segment
        self._positions: dict[int, int] = {}  # bytes settled per segment
        self._writer: IO[bytes] | None = None
        self._writer_segment: int | None = None
        self.events = 0  # events not yet settled

    # ------------------------------------------------------------ start

    def load(self) -> int:
        """Open the directory; return how many unsettled events a previous run left."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.iterdir()):
            match = _SEGMENT.match(path.name)
            if not match:
                continue
            number = int(match[1])
            size = self._trim_partial_line(path)
            position = min(self._read_position(number), size)
            if position >= size:
                self._remove(number, path)
                continue
            self._segments.append(number)
            self._sizes[number] = size
            self._positions[number] = position
            with path.open("rb") as handle:
                handle.seek(position)
                self.events += sum(1 for line in handle if line.strip())
        return self.events

    @staticmethod
    def _trim_partial_line(path: Path) -> int:
        """A crash mid-append leaves a line without its newline: that event was never acknowledged."""
        data_size = path.stat().st_size
        if data_size == 0:
            return 0
        with path.open("rb+") as handle:
            handle.seek(max(0, data_size - 1))
            if handle.read(1) == b"\n":
                return data_size
            handle.seek(0)
            content = handle.read()
            keep = content.rfind(b"\n") + 1
            handle.truncate(keep)
            log.warning("spool %s: dropped a partly written last line (%d bytes)", path.name, data_size - keep)
            return keep

    # ------------------------------------------------------------ facts

    @property
    def used_bytes(self) -> int:
        return sum(self._sizes[n] - self._positions.get(n, 0) for n in self._segments)

    def empty(self) -> bool:
        return self.events == 0

    def full_for(self, size: int) -> bool:
        return self.used_bytes + size > self.max_bytes

    # ------------------------------------------------------------ write

    def append(self, events: list[Event]) -> list[Event]:
        """Write events in order; return those that did not fit (the caller rejects them)."""
        if not events:
            return []
        total = self.used_bytes
        lines: list[bytes] = []
        taken = 0
        for event in events:
            line = (json.dumps({"id": event.id, "source": event.source, "message": event.message},
                               ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
            if total + len(line) > self.max_bytes:
                break
            total += len(line)
            lines.append(line)
            taken += 1
        self._write(lines)
        self.events += taken
        return events[taken:]

    def _write(self, lines: list[bytes]) -> None:
        index = 0
        while index < len(lines):
            writer, number = self._active_writer()
            written = 0
            while index < len(lines) and (written == 0 or self._sizes[number] + len(lines[index]) <= self.segment_bytes):
                writer.write(lines[index])
                self._sizes[number] += len(lines[index])
                written += 1
                index += 1
            writer.flush()
            os.fsync(writer.fileno())
            if self._sizes[number] >= self.segment_bytes:
                self._close_writer()

    def _active_writer(self) -> tuple[IO[bytes], int]:
        if self._writer is not None and self._writer_segment is not None:
            if self._sizes[self._writer_segment] < self.segment_bytes:
                return self._writer, self._writer_segment
            self._close_writer()
        number = (self._segments[-1] + 1) if self._segments else 1
        self._writer = self._path(number).open("ab")
        self._writer_segment = number
        self._segments.append(number)
        self._sizes[number] = 0
        self._positions[number] = 0
        return self._writer, number

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer, self._writer_segment = None, None

    # ------------------------------------------------------------ replay

    def next_chunk(self, max_events: int, max_bytes: int) -> Chunk | None:
        """The oldest unsettled events, in order (at most one segment per chunk)."""
        while self._segments:
            number = self._segments[0]
            position = self._positions[number]
            if position >= self._sizes[number]:
                if number == self._writer_segment:
                    return None  # caught up with the writer
                self._remove(number, self._path(number))
                continue
            events: list[Event] = []
            unreadable = 0
            size = 0
            end = position
            with self._path(number).open("rb") as handle:
                handle.seek(position)
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
                        events.append(Event(record["id"], record["message"], record.get("source", "spool")))
                    except (ValueError, KeyError, TypeError):
                        unreadable += 1
                        log.error("spool %s: skipped an unreadable line at byte %d", self._path(number).name,
                                  end - len(line))
            return Chunk(number, end, events, unreadable)
        return None

    def ack(self, chunk: Chunk) -> None:
        """The chunk's events are settled: move the read position past them."""
        number = chunk.segment
        self._positions[number] = chunk.end
        self.events -= len(chunk.events) + chunk.unreadable
        path = self._path(number)
        if chunk.end >= self._sizes[number] and number != self._writer_segment:
            self._remove(number, path)
        else:
            self._write_position(number, chunk.end)
        if self.events == 0 and self._writer_segment is not None and self.used_bytes == 0:
            # Everything replayed: start the next outage on a fresh segment.
            number = self._writer_segment
            self._close_writer()
            self._remove(number, self._path(number))

    def close(self) -> None:
        self._close_writer()

    # ------------------------------------------------------------ files

    def _path(self, number: int) -> Path:
        return self.directory / f"seg-{number:09d}.ndjson"

    def _position_path(self, number: int) -> Path:
        return self.directory / f"seg-{number:09d}.pos"

    def _read_position(self, number: int) -> int:
        try:
            return int(self._position_path(number).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _write_position(self, number: int, position: int) -> None:
        tmp = self._position_path(number).with_suffix(".pos.tmp")
        tmp.write_text(str(position))
        os.replace(tmp, self._position_path(number))

    def _remove(self, number: int, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._position_path(number).unlink(missing_ok=True)
        if number in self._segments:
            self._segments.remove(number)
        self._sizes.pop(number, None)
        self._positions.pop(number, None)
