"""Errors a user sees: one line that says what failed and where, no traceback."""


class PacsguardError(Exception):
    """An expected failure with a message meant for the user."""


class ConnectionProblem(PacsguardError):
    """The cluster could not be reached or refused us (TLS, auth, network)."""


class MissingPlugin(PacsguardError):
    """The cluster lacks a plugin the pack needs (e.g. Alerting)."""


class ConnectorError(PacsguardError):
    """A response connector could not do an action (e.g. Keycloak down, credentials refused, no such user).

    The fields let a caller record the failed action; the message never holds a secret.
    """

    def __init__(self, connector: str, action: str, target: str, reason: str, *, where: str = "") -> None:
        self.connector = connector
        self.action = action
        self.target = target
        self.reason = reason
        super().__init__(f"{connector}: cannot {action} {target}{where}: {reason}")
