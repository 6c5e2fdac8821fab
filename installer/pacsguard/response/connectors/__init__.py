"""Connectors: the systems a response acts on (Keycloak, ...). Dry run by default, one error class
(core.errors.ConnectorError) for everything that goes wrong, a typed result for everything done."""
