"""MkDocs hook: docstrings use Sphinx roles (``:class:`Rule```); the Python reference shows
the name alone, in code, as the roles mean to (mkdocstrings leaves the role's text)."""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):(?=<code>)")


def on_page_content(html, page, **kwargs):
    return ROLE.sub("", html)
