"""`ml_jobs ingest`: bring your own users and events (CSV, JSON Lines, Parquet) into the raw store."""
