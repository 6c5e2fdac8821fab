"""The response routine for one alert (docs/design.md): contain, preserve, scope, reset, each a
command that does the work through connectors, records what it did, and is safe to run twice."""
