"""Monitoring: feature drift (PSI + KS) between the training window and a recent window; reports."""
