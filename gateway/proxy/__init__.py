"""The request path, one module per stage; `service` runs them in order (docs/architecture.md)."""
