"""Implementations of ``hub`` sub-commands that are more than a few lines (called by hub.cli)."""
