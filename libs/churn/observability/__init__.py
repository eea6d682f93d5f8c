"""What the batch Jobs wrote, as Prometheus metrics (read from the data root at scrape time)."""
