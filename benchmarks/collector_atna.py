"""The collector's ATNA path on one core: messages per CPU-second (issue 22, goal 10,000).

    PYTHONPATH=installer python benchmarks/collector_atna.py --messages 20000
    # the same code path of another tree (e.g. main: `git worktree add /tmp/old main`):
    PYTHONPATH=/tmp/old/installer python benchmarks/collector_atna.py --messages 20000

Builds ``--messages`` RFC 5424 frames (MSGID IHE+RFC-3881) from the repository's own ATNA inputs
(pipelines/atna/_dev/test/pipeline) and, where ../shared is beside the checkout, the public
dcm4chee samples; each frame gets its own time, patient id and name and study UIDs, as a real
stream does (a patient the parser has seen before would be cheaper). Then, in CPU time of this
process (time.process_time; the machine may be shared, CPU time is what one core gives):

1. framer: the octet-counted stream fed to OctetCountingFramer in 256 KiB reads;
2. parser: each frame through convert_frame (syslog header, redaction, ATNA parser, signed envelope);
3. framed + parsed: 1 and 2 together, the collector's work per message before the journal;
4. end to end (unless --no-e2e): the real syslog TCP input (SyslogIntake.serve_stream) reading the
   stream from a client in another process, every event encoded as the journal would write it
   and then dropped (a sink: no disk, no cluster); the collector process's CPU time and wall time.

Prints the machine facts, the rates, and whether the goal (--goal, 10,000 a CPU-second for 3) is
met. Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import machine_facts
from pacsguard.collector.atna_envelope import set_envelope_key
from pacsguard.collector.counters import Counters
from pacsguard.collector.events import Event, NetworkIds
from pacsguard.collector.journal import encode
from pacsguard.collector.syslog_input import SyslogIntake, convert_frame
from pacsguard.parsers.syslog import OctetCountingFramer, parse_rfc5424

ROOT = Path(__file__).resolve().parents[1]
OWN = ROOT / "pipelines" / "atna" / "_dev" / "test" / "pipeline"
SAMPLES = ROOT.parent / "shared" / "samples" / "dicom-audit"
MAX_BYTES = 1 << 20
READ = 256 * 1024

_DATETIME = re.compile(rb'(EventDateTime=")[^"]*(")')
_OBJECT_ID = re.compile(rb'(ParticipantObjectID=")([^"]*)(")')
_OBJECT_NAME = re.compile(rb"(<ParticipantObjectName>)([^<]*)(</ParticipantObjectName>)")
_UID = re.compile(rb"^[0-9]+(?:\.[0-9]+)+$")


def templates(with_samples: bool) -> tuple[list[bytes], str]:
    """The AuditMessage bytes to vary, and where they came from."""
    own = sorted(p for p in OWN.iterdir() if p.suffix in (".xml", ".syslog"))
    xmls = [parse_rfc5424(p.read_bytes()).msg if p.suffix == ".syslog" else p.read_bytes() for p in own]
    where = f"{len(xmls)} own inputs"
    if with_samples and SAMPLES.is_dir():
        samples = sorted(SAMPLES.glob("*.xml"))
        xmls += [p.read_bytes() for p in samples]
        where += f" + {len(samples)} public samples ({SAMPLES})"
    return xmls, where


def frames(count: int, xmls: list[bytes], seed: int = 22) -> list[bytes]:
    """``count`` syslog frames, each with its own time, patient and studies."""
    rng = random.Random(seed)
    return [frame(n, rng.choice(xmls), rng) for n in range(count)]


def frame(n: int, xml: bytes, rng: random.Random) -> bytes:
    stamp = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:" \
            f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z"
    patient = f"PID{rng.randint(1, 10**7):07d}^^^HOSP".encode()

    def object_id(m: re.Match[bytes]) -> bytes:
        value = m[2]
        if _UID.match(value):
            value = f"1.2.840.{rng.randint(1, 10**6)}.{n}.{rng.randint(1, 10**9)}".encode()
        elif value and value != b"<none>":
            value = patient
        return m[1] + value + m[3]

    xml = _DATETIME.sub(lambda m: m[1] + stamp.encode() + m[2], xml)
    xml = _OBJECT_ID.sub(object_id, xml)
    xml = _OBJECT_NAME.sub(lambda m: m[1] + f"SURNAME{n}^GIVEN{rng.randint(1, 999)}".encode() + m[3], xml)
    return f"<85>1 {stamp} pacs{n % 7:02d} dcm4chee-arc 4711 IHE+RFC-3881 - ".encode() + b"\xef\xbb\xbf" + xml


def octet_stream(items: list[bytes]) -> bytes:
    return b"".join(str(len(f)).encode() + b" " + f for f in items)


def cpu(work: Any) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def framer_seconds(stream: bytes, expected: int) -> float:
    def work() -> None:
        framer, got = OctetCountingFramer(max_frame_size=MAX_BYTES), 0
        for start in range(0, len(stream), READ):
            got += len(framer.feed(stream[start:start + READ]))
        got += len(framer.finish())
        assert got == expected, f"framer gave {got} frames, not {expected}"
    return cpu(work)


def parser_seconds(items: list[bytes]) -> tuple[float, int]:
    errors = 0

    def work() -> None:
        nonlocal errors
        for frame in items:
            errors += convert_frame(frame, MAX_BYTES, strict=False).atna_error is not None
    return cpu(work), errors


def framed_parsed_seconds(stream: bytes, expected: int) -> float:
    def work() -> None:
        framer, got = OctetCountingFramer(max_frame_size=MAX_BYTES), 0
        for start in range(0, len(stream), READ):
            for frame in framer.feed(stream[start:start + READ]):
                convert_frame(frame, MAX_BYTES, strict=False)
                got += 1
        assert got + len(framer.finish()) == expected
    return cpu(work)


class Sink:
    """Stands in for the sender: each event encoded as the journal writes it, then dropped."""

    def __init__(self) -> None:
        self.events = 0
        self.bytes = 0
        self.done = asyncio.Event()
        self.expected = 0

    async def submit_many(self, events: list[Event], wait_on_fault: bool = True) -> int:
        for event in events:
            self.bytes += len(encode(event))
        self.events += len(events)
        if self.events >= self.expected:
            self.done.set()
        return len(events)


CLIENT = """
import socket, sys
data = open(sys.argv[1], "rb").read()
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as s:
    s.sendall(data)
"""


async def end_to_end(stream: bytes, expected: int) -> tuple[float, float, int]:
    """(CPU seconds of this process, wall seconds, events) for the stream through a TCP listener."""
    sink = Sink()
    sink.expected = expected
    intake = SyslogIntake(sink, Counters(), NetworkIds(), MAX_BYTES)  # type: ignore[arg-type]
    server = await intake.serve_stream("127.0.0.1", 0, "tcp")
    with tempfile.NamedTemporaryFile(suffix=".bin") as data:
        data.write(stream)
        data.flush()
        wall, started = time.perf_counter(), time.process_time()
        client = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, data.name, str(server.port),
                                                      stdout=subprocess.DEVNULL)
        await asyncio.wait_for(sink.done.wait(), timeout=600)
        cpu_seconds, wall = time.process_time() - started, time.perf_counter() - wall
        await client.wait()
    server.server.close()
    return cpu_seconds, wall, sink.events


def line(label: str, count: int, seconds: float, extra: str = "") -> str:
    return f"  {label:<42} {count / seconds:>9,.0f} msg/CPU-s  ({seconds * 1e6 / count:6.1f} us/msg){extra}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3, help="best of N rounds for each figure")
    parser.add_argument("--goal", type=float, default=10_000.0)
    parser.add_argument("--no-samples", action="store_true", help="only the repository's own inputs")
    parser.add_argument("--no-e2e", action="store_true", help="skip the TCP input run")
    args = parser.parse_args(argv)

    set_envelope_key("0123456789abcdef" * 4)  # a fixed bench key: no settings needed
    logging.getLogger("pacsguard.collector").setLevel(logging.ERROR)  # frames refused are counted below
    for fact in machine_facts():
        print(fact)
    import pacsguard  # where the code under test came from

    xmls, where = templates(not args.no_samples)
    items = frames(args.messages, xmls)
    stream = octet_stream(items)
    print(f"code: {Path(pacsguard.__file__).parent}; python {sys.version.split()[0]}")
    print(f"input: {len(items):,} frames from {where}, {len(stream) / len(items):,.0f} bytes a frame on average")

    best = min
    framer = best(framer_seconds(stream, len(items)) for _ in range(args.rounds))
    parsed = [parser_seconds(items) for _ in range(args.rounds)]
    parse, errors = best(s for s, _ in parsed), parsed[0][1]
    both = best(framed_parsed_seconds(stream, len(items)) for _ in range(args.rounds))
    print(f"best of {args.rounds} rounds, CPU time of this process:")
    print(line("framer (OctetCountingFramer, 256 KiB reads)", len(items), framer))
    print(line("parser (convert_frame -> signed envelope)", len(items), parse,
               f"  [{errors} frames to the failure index]"))
    print(line("framed + parsed to the envelope", len(items), both))
    rate = len(items) / both
    print(f"goal {args.goal:,.0f} msg/CPU-s framed + parsed: {'met' if rate >= args.goal else 'NOT met'} "
          f"({rate:,.0f})")
    if not args.no_e2e:
        runs = [asyncio.run(end_to_end(stream, len(items))) for _ in range(args.rounds)]
        cpu_seconds, wall, events = min(runs)
        print(line("end to end: TCP input -> journal encoding", events, cpu_seconds,
                   f"  wall {events / wall:,.0f} msg/s at {100 * cpu_seconds / wall:.0f} % of one core"))
    for fact in machine_facts()[1:]:
        print("after: " + fact)
    return 0


if __name__ == "__main__":
    sys.exit(main())
