"""Clarion's version, importable from any layer (``clarion`` itself imports the core)."""

__version__ = "0.1.0"
