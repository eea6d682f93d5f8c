"""Headless matplotlib figures as PNG bytes, shared by model evaluation and drift reports."""
