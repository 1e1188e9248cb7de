"""MkDocs hook: the HTTP API reference is rendered from the app's own OpenAPI document.

At every build the document is generated from ``clarion.api.app.create_app`` (an embedded
profile in a temporary directory: no database, broker or network), written to
``build/docs/openapi.json`` for ``[OAD(...)]`` in ``docs/api/reference.md`` to render, and
published with the site as ``openapi.json``. So the reference cannot drift from the code.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

SPEC = Path("build/docs/openapi.json")


def _spec() -> dict:
    from clarion.api.app import create_app
    from clarion.settings import Settings

    with tempfile.TemporaryDirectory(prefix="clarion-docs-") as tmp:
        return create_app(Settings.embedded(Path(tmp))).openapi()


def on_config(config):
    root = Path(config.config_file_path).parent
    target = root / SPEC
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(_spec(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return config


def on_post_build(config):
    root = Path(config.config_file_path).parent
    shutil.copyfile(root / SPEC, Path(config.site_dir) / "openapi.json")
