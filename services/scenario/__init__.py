"""Synthetic scenarios for demos and tests."""
