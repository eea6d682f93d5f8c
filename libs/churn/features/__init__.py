"""Features: the schema contract (`schema`, numpy only) and its computation (`compute`, pandas)."""
