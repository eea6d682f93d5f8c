"""The daily cycle: a synthetic world that goes on, and the incremental update of derived data."""
