"""`pacsguard collect`: receive PACS audit events (syslog, files, FHIR over HTTP) and bulk them into the data stream.

Modules, one job each:
- events:        the Event record, deterministic ids, UTF-8 decoding
- counters:      received = indexed + failed + spooled + rejected + in_flight
- queue:         a queue bounded by count and bytes (back-pressure)
- sender:        bulk create with retries, per-item outcome, spooling and replay
- spool:         the bounded on-disk NDJSON spool
- atna_envelope: ATNA XML -> envelope for pipelines/atna/pipeline.yaml, patient data redacted
- syslog_input:  UDP / TCP / TLS receivers
- files:         JSON-lines and Keycloak log tailing with persisted offsets
- http_input:    POST /fhir and /fhir/AuditEvent
- service:       wiring, start/stop, the CLI entry and a thread runner
"""

from pacsguard.collector.service import Collector, CollectorConfig, CollectorThread, Listen, run_collector

__all__ = ["Collector", "CollectorConfig", "CollectorThread", "Listen", "run_collector"]
