"""Where tiergate keeps things: the engine, the schema and its migrations, the ledger writer, read-back queries."""
