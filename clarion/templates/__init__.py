"""Built-in templates: ``<locale>/<name>.toml`` files shipped in the package.

Each file holds templates by key (a top-level table); a table's ``subject``, ``html`` and
``text`` are the version for every channel ("*"), and a sub-table named after a channel
(``[link_expired.email]``) is that channel's own version. An optional top-level
``macros`` string (Jinja macros the file's templates share) is put before each field, so
every built-in version is self-contained: copied into a stored version, it works as is.

A stored version of the same key, channel and locale overrides a built-in one.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from typing import Any

from clarion.channels import registry

# The fields of a template version (clarion.core.sandbox renders them).
FIELDS = ("subject", "html", "text")


@functools.cache
def builtin_sources() -> dict[tuple[str, str, str], dict[str, str | None]]:
    """(key, channel, locale) → {subject, html, text} of every built-in template."""
    found: dict[tuple[str, str, str], dict[str, str | None]] = {}
    root = resources.files(__name__)
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if not folder.is_dir() or folder.name.startswith(("_", ".")):
            continue
        for file in sorted(folder.iterdir(), key=lambda p: p.name):
            if file.name.endswith(".toml"):
                _load(found, folder.name, tomllib.loads(file.read_text("utf-8")))
    return found


def _load(found: dict, locale: str, document: dict[str, Any]) -> None:
    macros = document.pop("macros", "")
    for key, table in document.items():
        for channel, fields in [
            ("*", table),
            *[(c, table[c]) for c in registry.names() if c in table],
        ]:
            if (key, channel, locale) in found:
                raise ValueError(f"built-in template {key}/{channel}/{locale} is defined twice")
            sources = {
                name: (macros + fields[name]) if isinstance(fields.get(name), str) else None
                for name in FIELDS
            }
            if any(sources.values()):
                found[key, channel, locale] = sources
