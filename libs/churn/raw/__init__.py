"""The raw-data store: events partitioned by event date, users as one table, one manifest."""
