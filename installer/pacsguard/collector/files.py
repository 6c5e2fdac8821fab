"""Tail JSON-lines, Keycloak and syslog files; resume after a restart from a persisted offset.

Each line is one event, sent as ``message``. A syslog file (kind "syslog") holds one frame a
line, RFC 5424 or RFC 3164 as rsyslog writes them: each goes through the same conversion as a
network frame (ATNA XML through the ATNA parser, syslog_input.convert_file_line). Per file a small state file holds
(device, inode, generation, offset): the offset is advanced only past lines
whose events are settled (indexed, failed, spooled or rejected), so a crash
re-reads lines rather than skipping them, and the re-read lines get the same
ids (device + inode + generation + offset + text) and meet 409s: no gap, no
duplicate. The exact position is kept in the journal (journal.py, file
checkpoints): each journaled line carries it, and the position past lines that
need no delivery is saved with the counters, so after ``kill -9`` reading
resumes after the last line the journal holds or counted, and none is counted
twice.

Rotation: when the path names a new inode, the old file is read to its end
first, then the new one from 0. After a restart, a rotated-away file is found
again by its inode in the same directory (e.g. ``app.log.1``) and finished.
Truncation (copytruncate): the size drops below the read position; reading
restarts at 0 with generation + 1 so the new lines get new ids.
Known limit (as for every tailer): a file truncated and regrown past the old
offset while the collector is stopped cannot be told from an unchanged one.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from pacsguard.collector.counters import Counters
from pacsguard.collector.events import Event, decode, make_id
from pacsguard.collector.ratelog import RateLimitedLog
from pacsguard.collector.sender import Sender
from pacsguard.collector.syslog_input import convert_file_line

log = logging.getLogger("pacsguard.collector")
FileKind = Literal["json", "keycloak", "syslog"]
READ_CHUNK = 1024 * 1024
SAVE_EVERY = 1.0  # seconds between state file writes


def keycloak_event_line(line: str) -> bool:
    """Keycloak logs mostly hold server noise; only event lines are sent (mirrors the router pipeline's detection)."""
    return "org.keycloak.events" in line or "operationType=" in line or ("type=" in line and "realmId=" in line)


@dataclass(frozen=True)
class Position:
    dev: int
    inode: int
    generation: int
    offset: int


class FileTailer:
    def __init__(self, path: Path, kind: FileKind, state_dir: Path, sender: Sender, counters: Counters,
                 max_bytes: int, poll_interval: float = 0.25) -> None:
        self.path = path
        self.kind = kind
        self.source = f"file:{path.name}"
        self.sender = sender
        self.counters = counters
        self.max_bytes = max_bytes
        self.poll_interval = poll_interval
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        self.state_path = state_dir / f"{digest}.json"
        self.key = f"file:{digest}"  # its checkpoint in the journal's state
        self.rlog = RateLimitedLog(log)
        self._fh: IO[bytes] | None = None
        self._dev = self._ino = self._generation = 0
        self._read_pos = 0  # file offset of the next byte to read
        self._buf = bytearray()  # bytes of the current, unfinished line
        self._buf_start = 0  # file offset of _buf[0]
        self._skipping = False  # inside an oversize line, discarding to its end
        # Lines handed to the sender, in file order: [position after the line, settled?]
        self._pending: collections.deque[list[object]] = collections.deque()
        self.committed: Position | None = None
        self._dirty = False
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------ state

    def _load_state(self) -> Position | None:
        """Where to resume: the journal's checkpoint (saved with the counters, and journaled with every line,
        so lines it holds or counted are never read again), else the tailer's own state file."""
        checkpoint = self.sender.journal.checkpoints.get(self.key)
        if checkpoint is not None:
            return Position(*checkpoint[1:])
        try:
            data = json.loads(self.state_path.read_text())
            return Position(int(data["dev"]), int(data["inode"]), int(data.get("generation", 0)), int(data["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_state(self) -> None:
        """The tailer's own state file (the journal's checkpoint, saved with the counters, is the exact one)."""
        if self.committed is None or not self._dirty:
            return
        pos = self.committed
        data = {"path": str(self.path), "dev": pos.dev, "inode": pos.inode, "generation": pos.generation,
                "offset": pos.offset}
        tmp = self.state_path.with_suffix(".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.state_path)
        except OSError as exc:  # a full disk: the journal's checkpoint still holds the position
            self.rlog.warning("state", "%s: cannot save the file offset: %s", self.path, exc)
            return
        self._dirty = False

    def _commit(self, position: Position) -> None:
        self.committed = position
        self._dirty = True
        self.sender.checkpoint(self.key, (position.dev, position.inode, position.generation, position.offset))

    def _settled(self, entry: list[object], final: bool) -> None:
        if not final:
            # Refused for now (shutdown, spool full): the offset must not pass
            # this line, so the next run reads it again; the later lines re-sent
            # with it meet their own ids (409): no duplicates.
            return
        entry[1] = True
        while self._pending and self._pending[0][1]:
            position = self._pending.popleft()[0]
            assert isinstance(position, Position)
            self._commit(position)

    def _done_now(self, end: int) -> None:
        """A line that needs no delivery (blank, skipped, rejected) still moves the offset."""
        position = Position(self._dev, self._ino, self._generation, end)
        if self._pending:
            self._pending.append([position, True])
        else:
            self._commit(position)

    # ------------------------------------------------------------ opening

    def _open(self, path: Path, offset: int, generation: int) -> bool:
        try:
            handle = path.open("rb")
        except OSError:
            return False
        st = os.fstat(handle.fileno())
        if self._fh is not None:
            self._fh.close()
        self._fh = handle
        self._dev, self._ino, self._generation = st.st_dev, st.st_ino, generation
        if offset > st.st_size:
            log.warning("%s is shorter than the saved offset %d: it was truncated; reading from the start",
                        path, offset)
            offset, self._generation = 0, generation + 1
        self._read_pos = self._buf_start = offset
        self._buf.clear()
        self._skipping = False
        # Lines of the previous file still in flight keep the saved offset behind them.
        self._done_now(offset)
        return True

    def _resume(self) -> bool:
        saved = self._load_state()
        self.committed = saved
        if saved is None:
            return self._open(self.path, 0, 0)
        try:
            st = self.path.stat()
            current = (st.st_dev, st.st_ino)
        except OSError:
            current = None
        if current == (saved.dev, saved.inode):
            log.info("%s: resuming at byte %d", self.path, saved.offset)
            return self._open(self.path, saved.offset, saved.generation)
        rotated = self._find_inode(saved.dev, saved.inode)
        if rotated is not None:
            log.info("%s was rotated while stopped: finishing %s from byte %d first", self.path, rotated, saved.offset)
            return self._open(rotated, saved.offset, saved.generation)
        if current is not None:
            log.warning("%s was rotated while stopped and the old file is gone: reading the new one from the start",
                        self.path)
        return self._open(self.path, 0, 0)

    def _find_inode(self, dev: int, inode: int) -> Path | None:
        try:
            for candidate in self.path.parent.iterdir():
                st = candidate.stat()
                if (st.st_dev, st.st_ino) == (dev, inode) and candidate != self.path:
                    return candidate
        except OSError:
            return None
        return None

    # ------------------------------------------------------------ reading

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last_save = loop.time()
        while not self._stopped.is_set() and not self._resume():
            await self._sleep()  # the file does not exist yet
        while not self._stopped.is_set():
            if self.sender.saturated():
                await self._sleep()  # spool full: wait rather than reject lines the file still holds
                continue
            got = await self._read_some()
            if not got and not self._stopped.is_set():
                await self._check_rotation()
                await self._sleep()
            if loop.time() - last_save >= SAVE_EVERY:
                self.save_state()
                last_save = loop.time()
        self.save_state()

    async def _sleep(self) -> None:
        try:
            await asyncio.wait_for(self._stopped.wait(), self.poll_interval)
        except asyncio.TimeoutError:
            pass

    async def _read_some(self) -> bool:
        assert self._fh is not None
        self._fh.seek(self._read_pos)
        data = self._fh.read(READ_CHUNK)
        if not data:
            return False
        self._read_pos += len(data)
        await self._consume(data)
        return True

    async def _consume(self, data: bytes) -> None:
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            if newline < 0:
                self._append_partial(data[start:])
                return
            piece = data[start:newline]
            end = self._buf_start + len(self._buf) + len(piece) + 1
            if self._skipping:
                self._skipping = False
                self._done_now(end)
            else:
                line = bytes(self._buf) + piece
                await self._line(line, self._buf_start, end)
            self._buf.clear()
            self._buf_start = end
            start = newline + 1

    def _append_partial(self, data: bytes) -> None:
        if self._skipping:
            self._buf_start += len(data)
            return
        self._buf += data
        if len(self._buf) > self.max_bytes:
            self.counters.reject_new(self.source, "oversize")
            self.rlog.warning("oversize", "%s: rejected a line longer than %d bytes at offset %d",
                              self.path, self.max_bytes, self._buf_start)
            self._buf_start += len(self._buf)
            self._buf.clear()
            self._skipping = True

    async def _line(self, raw: bytes, start: int, end: int) -> None:
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            self._done_now(end)
            return
        if len(raw) > self.max_bytes:
            self.counters.reject_new(self.source, "oversize")
            self.rlog.warning("oversize", "%s: rejected a line of %d bytes at offset %d, above the %d-byte limit",
                              self.path, len(raw), start, self.max_bytes)
            self._done_now(end)
            return
        if self.kind == "syslog":
            converted = convert_file_line(raw, self.max_bytes)
            text, bad = converted.message, converted.decode_error
            if converted.atna_error:
                self.counters.note("atna_errors")
                self.rlog.warning("atna", "%s: ATNA message at offset %d did not parse (%s); it goes to the failure "
                                  "index", self.path, start, converted.atna_error)
        else:
            text, bad = decode(raw)
        if self.kind == "keycloak" and not keycloak_event_line(text):
            self.counters.note("skipped")
            self._done_now(end)
            return
        if bad:
            self.counters.note("decode_errors")
            self.rlog.warning("decode", "%s: line at offset %d is not valid UTF-8; bytes replaced", self.path, start)
        entry: list[object] = [Position(self._dev, self._ino, self._generation, end), False]
        self._pending.append(entry)
        event = Event(make_id("file", self._dev, self._ino, self._generation, start, raw), text, self.source,
                      on_settled=lambda final: self._settled(entry, final),
                      checkpoint=(self.key, (self._dev, self._ino, self._generation, end)))
        await self.sender.submit(event)

    async def _check_rotation(self) -> None:
        try:
            st = self.path.stat()
        except OSError:
            return  # moved away, the new file is not there yet: keep the old one open
        if (st.st_dev, st.st_ino) != (self._dev, self._ino):
            # Finish the old file (a writer may have added lines after our last read).
            while await self._read_some():
                pass
            if self._buf and not self._skipping:
                end = self._buf_start + len(self._buf)
                line = bytes(self._buf)
                self._buf.clear()
                await self._line(line, self._buf_start, end)
            log.info("%s was rotated: reading the new file from the start", self.path)
            self._open(self.path, 0, 0)
        elif st.st_size < self._read_pos:
            log.warning("%s was truncated: reading from the start", self.path)
            self._open(self.path, 0, self._generation + 1)

    def stop(self) -> None:
        self._stopped.set()
