"""The README is the first five minutes: short, and every link in it leads somewhere.

The docs site itself is checked by ``mkdocs build --strict`` in ``make lint``; the README is
outside it, so its links are checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_stays_newcomer_length():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


def test_readme_keeps_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert "make run" in text
    assert "make test" in text  # .ci/run runs the README's test command


def test_every_relative_link_in_the_readme_exists():
    targets = [t for t in LINK.findall(README.read_text(encoding="utf-8")) if "://" not in t]
    assert targets
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert missing == []
