"""Figures as PNG bytes: headless matplotlib (the month's timeline) and Pillow charts (model evaluation, drift reports)."""
