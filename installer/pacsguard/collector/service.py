"""The collector: sources + sender + spool on one asyncio loop, started and stopped as a unit.

``run_collector`` is what ``pacsguard collect`` runs (until SIGTERM/SIGINT);
``CollectorThread`` runs the same collector on a background thread for tests
and the benchmark.

Several instances (behind one load balancer, docs/collector.md) share the cluster, the
envelope key and the failures key, and nothing else: each has a state directory of its own
(journal, file offsets), locked while it runs, so a second instance on the same directory
refuses to start instead of interleaving two journals. /health names the instance and the
ids of its two keys, so an operator can see that every instance holds the same ones.

Shutdown order matters for "nothing lost": stop the sources (no new events),
then let the sender flush the queue (or spool it), then persist the file
offsets, which only move once the events behind them are settled.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
import os
import re
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pacsguard.collector.atna_envelope import envelope_key_id, set_envelope_key
from pacsguard.collector.counters import Counters, Throughput, progress_line
from pacsguard.collector.events import NetworkIds
from pacsguard.collector.failures import FailureProtector, key_id
from pacsguard.collector.files import FileKind, FileTailer
from pacsguard.collector.http_input import FhirHttpServer
from pacsguard.collector.journal import Journal
from pacsguard.collector.limits import Limits
from pacsguard.collector.sender import Sender, SenderConfig
from pacsguard.collector.syslog_input import StreamServer, SyslogIntake, UdpInput, tls_context
from pacsguard.core.connection import Cluster
from pacsguard.core.errors import ConnectionProblem, PacsguardError
from pacsguard.core.models import Progress
from pacsguard.core.secrets import resolve_envelope_key
from pacsguard.core.settings import Settings, state_dir

log = logging.getLogger("pacsguard.collector")
MiB = 1024 * 1024


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": MiB, "mb": 1000**2, "mib": MiB,
          "g": 1024 * MiB, "gb": 1000**3, "gib": 1024 * MiB}


def parse_size(text: str) -> int:
    """'1MiB', '512MiB', '10MB', '65536' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match[2].lower() not in _UNITS:
        raise PacsguardError(f"bad size {text!r}: use e.g. 1MiB, 512MiB, 10MB or a number of bytes")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def parse_networks(texts: list[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """'10.0.0.5', '10.0.0.0/24', '::1' -> networks (--proxy-from)."""
    try:
        return tuple(ipaddress.ip_network(text.strip(), strict=False) for text in texts)
    except ValueError as exc:
        raise PacsguardError(f"bad --proxy-from: {exc} (use an address or ADDRESS/BITS, e.g. 10.0.0.5 or "
                             "10.0.0.0/24)") from None


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, default_host: str = "127.0.0.1") -> Listen:
        """'5514', ':5514', '127.0.0.1:5514', '0.0.0.0:5514' or '[::1]:5514'.

        A bare port listens on loopback only: exposing a receiver to the network
        is a decision the operator writes down (0.0.0.0:6514), not a default.
        """
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = "", text
        host = host.strip("[]") or default_host
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise PacsguardError(f"bad listen address {text!r}: use HOST:PORT, e.g. 0.0.0.0:6514")
        return cls(host, int(port))


@dataclass(frozen=True)
class CollectorConfig:
    state_dir: Path
    udp: tuple[Listen, ...] = ()
    tcp: tuple[Listen, ...] = ()
    tls: tuple[Listen, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    http: tuple[Listen, ...] = ()
    https: tuple[Listen, ...] = ()  # the FHIR endpoint over TLS, with the --tls-cert/--tls-key pair
    files: tuple[tuple[Path, FileKind], ...] = ()
    max_message_bytes: int = MiB
    http_max_body_bytes: int = 16 * MiB
    spool_max_bytes: int = 512 * MiB
    sender: SenderConfig = field(default_factory=SenderConfig)
    progress_interval: float = 10.0
    shutdown_timeout: float = 15.0
    file_poll_interval: float = 0.25
    limits: Limits = field(default_factory=Limits)
    udp_receive_buffer: int = 8 * MiB
    # FHIR over HTTP(S): a bearer token, or client certificates (https with tls_client_ca).
    http_token: SecretStr | None = None
    http_anonymous: bool = False  # explicit opt-out, for a loopback-only test set-up
    failures_key: bytes | None = None  # encrypts originals that go to the failure index (failures.py)
    instance: str = ""  # this instance's name in /health (default: the host name)

    def validate(self, require_source: bool = True) -> None:
        # Without sources a collector still replays its spool (tests, a drain-only run).
        if require_source and not (self.udp or self.tcp or self.tls or self.http or self.https or self.files):
            raise PacsguardError("no source: give at least one of --udp, --tcp, --tls, --http, --https, --file, "
                                 "--keycloak-file")
        if (self.tls or self.https) and not (self.tls_cert and self.tls_key):
            raise PacsguardError("--tls and --https need --tls-cert and --tls-key (PEM files)")
        for path in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if (self.tls or self.https) and path is not None and not path.is_file():
                raise PacsguardError(f"{path} does not exist")
        if ((self.http or self.https) and not (self.http_token or self.http_anonymous)
                and (self.http or not self.tls_client_ca)):
            raise PacsguardError("the FHIR endpoint needs sender authentication: set a bearer token "
                                 "(PACSGUARD_COLLECTOR_TOKEN or --http-token-file) or, with --https only, "
                                 "--tls-client-ca for client certificates")
        if self.max_message_bytes < 1024:
            raise PacsguardError("--max-message-size must be at least 1KiB")

    @property
    def instance_name(self) -> str:
        return self.instance or socket.gethostname()

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"  # the write-ahead journal (kept under its old name)

    @property
    def files_dir(self) -> Path:
        return self.state_dir / "files"


LOCK_FILE = "collector.lock"


def lock_state_dir(path: Path) -> int:
    """Hold ``path`` for this process (an exclusive lock the kernel drops when it ends, kill -9 too)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise PacsguardError(f"cannot use the state directory {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise PacsguardError(f"the state directory {path} is in use by another collector (pid {holder}): give "
                             "every instance a --state-dir of its own (its journal and file offsets)") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def default_state_dir(settings: Settings) -> Path:
    return state_dir() / f"collector-{settings.id_prefix}-{settings.namespace}"


def widen_pool(cluster: Cluster, size: int) -> None:
    """Let `size` requests share the client's connections (urllib3's default pool holds one).

    With several bulk workers and the replayer, a one-connection pool opens
    and throws away a connection per concurrent request and logs a warning
    each time. The transport rebuilds its connections with the same
    auth/TLS options and the larger pool.
    """
    transport = cluster.client.transport
    if getattr(transport, "pool_maxsize", None) == size or not hasattr(transport, "set_connections"):
        return
    old = transport.connection_pool
    transport.pool_maxsize = size
    del transport.connection_pool  # else set_connections keeps the existing connection for the same host
    try:
        transport.set_connections(transport.hosts)
    except Exception:
        transport.connection_pool = old
        raise
    old.close()


class Collector:
    def __init__(self, config: CollectorConfig, cluster: Cluster, data_stream: str, failures_index: str,
                 progress: Progress | None = None) -> None:
        self.config = config
        self.cluster = cluster
        widen_pool(cluster, config.sender.workers + 2)  # workers, the replayer, a diversion
        self.data_stream = data_stream
        self.failures_index = failures_index
        self.progress = progress
        self.counters = Counters()
        self.ids = NetworkIds()
        self.ports: dict[str, list[int]] = {"udp": [], "tcp": [], "tls": [], "http": [], "https": []}
        self.sender: Sender | None = None
        self._udp: list[UdpInput] = []
        self._udp_prior_drops = 0
        self._streams: list[StreamServer] = []
        self._http: list[FhirHttpServer] = []
        self._tailers: list[FileTailer] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._reporter: asyncio.Task[None] | None = None
        self._lock: int | None = None
        self.instance = {"name": config.instance_name, "pid": os.getpid(),
                         "envelope_key_id": envelope_key_id(),
                         "failures_key_id": key_id(config.failures_key) if config.failures_key else None}

    def snapshot(self) -> dict[str, Any]:
        if self._udp:
            self.counters.set_fact("udp_kernel_drops", self._udp_prior_drops + sum(u.drops() for u in self._udp))
        snap = {"instance": self.instance, **self.counters.snapshot()}
        if self.sender is not None:
            snap["spooling"] = self.sender.spooling
            snap["journal_bytes"] = self.sender.journal.used_bytes
            snap["journal"] = self.sender.journal_state()
        if self._udp:
            snap["udp_receive_buffer_bytes"] = [u.receive_buffer for u in self._udp]
        gates = {f"{s.source}:{s.port}": s.gate.state() for s in self._streams}
        gates.update({f"http:{h.port}": h.gate.state() for h in self._http})
        if gates:
            snap["inputs"] = gates
        return snap

    async def start(self) -> None:
        cfg = self.config
        cfg.validate(require_source=False)
        self._lock = lock_state_dir(cfg.state_dir)
        journal = Journal(cfg.spool_dir, cfg.spool_max_bytes)
        protect = FailureProtector(cfg.failures_key) if cfg.failures_key else None
        self.sender = Sender(self.cluster, self.data_stream, self.failures_index, self.counters, journal, cfg.sender,
                             protect)
        try:
            self.sender.start()
        except OSError as exc:
            raise PacsguardError(f"cannot use the journal directory {cfg.spool_dir}: {exc.strerror or exc}") from None
        intake = SyslogIntake(self.sender, self.counters, self.ids, cfg.max_message_bytes)
        try:
            self._udp_prior_drops = self.counters.udp_kernel_drops
            for listen in cfg.udp:
                udp = await intake.serve_udp(listen.host, listen.port, cfg.udp_receive_buffer)
                self._udp.append(udp)
                self.ports["udp"].append(int(udp.sock.getsockname()[1]))
            for listen in cfg.tcp:
                server = await intake.serve_stream(listen.host, listen.port, "tcp", None, cfg.limits)
                self._streams.append(server)
                self.ports["tcp"].append(server.port)
            context: ssl.SSLContext | None = None
            if cfg.tls or cfg.https:
                assert cfg.tls_cert is not None and cfg.tls_key is not None
                try:
                    context = tls_context(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
                except (OSError, ssl.SSLError) as exc:
                    raise PacsguardError(f"cannot load the TLS certificate/key ({cfg.tls_cert}, {cfg.tls_key}): "
                                         f"{getattr(exc, 'reason', None) or exc}") from None
            for listen in cfg.tls:
                server = await intake.serve_stream(listen.host, listen.port, "tls", context, cfg.limits)
                self._streams.append(server)
                self.ports["tls"].append(server.port)
            for kind, listens, tls in (("http", cfg.http, None), ("https", cfg.https, context)):
                for listen in listens:
                    http = FhirHttpServer(self.sender, self.counters, self.ids, cfg.max_message_bytes,
                                          cfg.http_max_body_bytes, self.snapshot, cfg.limits,
                                          cfg.http_token.get_secret_value() if cfg.http_token else None,
                                          client_certificates=tls is not None and cfg.tls_client_ca is not None)
                    self.ports[kind].append(await http.start(listen.host, listen.port, tls))
                    self._http.append(http)
        except (OSError, PacsguardError) as exc:
            await self.stop()
            if isinstance(exc, PacsguardError):
                raise
            raise PacsguardError(f"cannot listen: {exc.strerror or exc}") from None
        for path, kind in cfg.files:
            tailer = FileTailer(path, kind, cfg.files_dir, self.sender, self.counters, cfg.max_message_bytes,
                                cfg.file_poll_interval)
            self._tailers.append(tailer)
            self._tasks.append(asyncio.create_task(tailer.run()))
        if self.progress is not None and cfg.progress_interval > 0:
            self._reporter = asyncio.create_task(self._report())

    async def _report(self) -> None:
        assert self.progress is not None
        throughput = Throughput(self.counters)
        while True:
            await asyncio.sleep(self.config.progress_interval)
            self.progress(progress_line(self.counters.snapshot(), throughput.rate()))

    async def stop(self) -> dict[str, Any]:
        """Stop the sources, flush or spool what is queued, save the file offsets; return the counters."""
        if self._udp:
            self.snapshot()  # the kernel's last drop count, before the sockets go
        for udp in self._udp:
            udp.close()
        for server in self._streams:
            await server.close()
        for http in self._http:
            await http.close()
        for tailer in self._tailers:
            tailer.stop()
        if self._reporter is not None:
            self._reporter.cancel()
        await asyncio.gather(*self._tasks, *([self._reporter] if self._reporter else []), return_exceptions=True)
        if self.sender is not None:
            await self.sender.close(self.config.shutdown_timeout)
        for tailer in self._tailers:
            tailer.save_state()  # offsets moved while the sender flushed
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        snap = self.snapshot()
        elapsed = max(snap["uptime_seconds"], 1e-9)
        snap["events_per_second"] = round((snap["indexed"] + snap["failed"]) / elapsed, 1)
        return snap


def preflight(cluster: Cluster, settings: Settings) -> str | None:
    """Refuse to start against a cluster without the pack; a cluster that is away is fine (spool)."""
    template = f"{settings.scope}-events"
    try:
        if not cluster.exists(f"/_index_template/{template}"):
            raise PacsguardError(f"the pack is not installed in {cluster.url} (no index template {template}): "
                                 "run `pacsguard install` first")
    except ConnectionProblem as exc:
        text = str(exc)
        if text.startswith("cannot reach") or "did not answer" in text:
            return f"{text}: starting anyway, events will be spooled until it answers"
        raise  # wrong password, untrusted certificate, missing permission: waiting will not fix it
    return None


def run_collector(config: CollectorConfig, cluster: Cluster, settings: Settings,
                  progress: Progress) -> dict[str, Any]:
    """Run until SIGTERM or SIGINT; return the final counters."""
    set_envelope_key(resolve_envelope_key(settings))  # the key the router checks ATNA envelopes with
    warning = preflight(cluster, settings)
    if warning:
        progress(f"warning: {warning}")

    async def main() -> dict[str, Any]:
        collector = Collector(config, cluster, settings.index("events_data_stream"), settings.index("failures"),
                              progress)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await collector.start()
        listening = ", ".join(f"{kind} {','.join(map(str, ports))}" for kind, ports in collector.ports.items() if ports)
        files = ", ".join(str(p) for p, _ in config.files)
        progress(f"collecting into {collector.data_stream} at {cluster.url}"
                 + (f"; listening on {listening}" if listening else "") + (f"; tailing {files}" if files else ""))
        try:
            await stop.wait()
        finally:
            progress("stopping: flushing queued events (or spooling them)")
            snap = await collector.stop()
        progress(progress_line(snap, snap["events_per_second"]))
        return snap

    return asyncio.run(main())


class CollectorThread:
    """A collector on its own loop in a background thread (tests, benchmark)."""

    def __init__(self, config: CollectorConfig, cluster: Cluster, settings: Settings) -> None:
        set_envelope_key(resolve_envelope_key(settings))
        self.collector = Collector(config, cluster, settings.index("events_data_stream"), settings.index("failures"))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pacsguard-collector", daemon=True)
        self.final: dict[str, Any] | None = None

    @property
    def ports(self) -> dict[str, list[int]]:
        return self.collector.ports

    @property
    def counters(self) -> Counters:
        return self.collector.counters

    def start(self) -> CollectorThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.collector.start(), self._loop).result(30)
        return self

    def call(self, func: Callable[[], Any]) -> Any:
        """Run a function on the collector's loop (e.g. to submit events directly)."""
        async def wrapper() -> Any:
            result = func()
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(120)

    def stop(self, timeout: float = 120) -> dict[str, Any]:
        if self.final is None:
            self.final = asyncio.run_coroutine_threadsafe(self.collector.stop(), self._loop).result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
        return self.final
