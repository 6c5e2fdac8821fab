"""Transports for the pack's own alert delivery: HTTP (webhook, Slack) and SMTP.

Each transport makes one attempt at a time and says how it went (channels/attempt.py);
engines/delivery.py owns retries, back-off and the result the engine records.
"""
