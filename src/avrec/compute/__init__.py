"""Engines for the heavy work: this machine (processes), or a Ray cluster (``compute.ray``,
with the ``scale`` extra)."""

ENGINES = ("local", "ray")

__all__ = ["ENGINES"]
