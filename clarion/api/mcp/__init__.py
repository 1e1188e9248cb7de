"""Clarion as a tool for AI agents: a Model Context Protocol server.

``clarion mcp`` serves it over stdio (the key comes from ``CLARION_MCP_API_KEY``), and the
API serves it over streamable HTTP at ``/mcp`` (the key comes in ``Authorization: Bearer``).
Both need the ``mcp`` extra (``pip install 'clarion[mcp]'``); without it the API simply
has no ``/mcp``.
"""

from __future__ import annotations

import importlib.util


def available() -> bool:
    """Whether the MCP SDK is installed (checked without importing it)."""
    return importlib.util.find_spec("mcp") is not None
