"""The response routine (contain, preserve, scope, reset) and the connectors it acts through."""
