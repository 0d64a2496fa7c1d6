"""Workbench for the methods of the "evolve foundation models" papers (ASAL and friends)."""

__version__ = "0.1.0"
