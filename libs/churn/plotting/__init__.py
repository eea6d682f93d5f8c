"""Figures as PNG bytes: headless matplotlib (drift reports) and Pillow line charts (model evaluation)."""
