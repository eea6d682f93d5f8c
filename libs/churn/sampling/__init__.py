"""Stable per-user hashing: shards and deterministic subsamples (`churn.sampling.users`)."""
