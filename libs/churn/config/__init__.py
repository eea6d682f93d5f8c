"""Typed settings loaded from YAML with env overrides: see `churn.config.settings`."""
