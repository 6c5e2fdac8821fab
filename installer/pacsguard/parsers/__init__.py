"""Parsers that turn raw audit input (ATNA XML, syslog frames) into schema events."""
