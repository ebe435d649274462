"""Dataflows runnable with ``python -m bytewax.run dataflows.MODULE:flow``."""
