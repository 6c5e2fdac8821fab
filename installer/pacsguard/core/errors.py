"""Errors a user sees: one line that says what failed and where, no traceback."""


class PacsguardError(Exception):
    """An expected failure with a message meant for the user."""


class ConnectionProblem(PacsguardError):
    """The cluster could not be reached or refused us (TLS, auth, network)."""


class MissingPlugin(PacsguardError):
    """The cluster lacks a plugin the pack needs (e.g. Alerting)."""
