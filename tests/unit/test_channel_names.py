"""Channel names live in the channel packages only: everything else asks the registry.

A channel added by a package (built-in or an entry point) then reaches the API schemas,
preferences, digests, templates, queues and routing without an edit elsewhere; a name
written out in core code would leave it out of whichever list repeats it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from clarion.channels import registry

ROOT = Path(__file__).resolve().parents[2] / "clarion"
# Not channel names, though spelled like one: the subscriber's email address field.
NOT_CHANNELS = {
    ("db/subscribers.py", "email"),
    ("core/deliver_jobs.py", "email"),
    ("api/schemas.py", "email"),
    ("demo.py", "email"),
    ("engine/packs/activities.py", "email"),
}
# Documentation in the OpenAPI document (examples) and its tag names.
DOC_KEYWORDS = {"examples", "json_schema_extra", "tags"}


def _literals(tree: ast.AST) -> list[ast.Constant]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in DOC_KEYWORDS:
            skipped |= {id(n) for n in ast.walk(node.value)}
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skipped
    ]


def channel_literals(root: Path = ROOT) -> list[str]:
    names = set(registry.names())
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith("channels/"):
            continue
        for node in _literals(ast.parse(path.read_text("utf-8"))):
            if node.value in names and (relative, node.value) not in NOT_CHANNELS:
                found.append(f"clarion/{relative}:{node.lineno}: {node.value!r}")
    return found


def test_no_channel_name_is_written_outside_the_channel_packages():
    assert channel_literals() == []


def test_the_check_finds_a_channel_name(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "x.py").write_text('TIMED = ("email", "push")\nWORD = "pushy"\n')
    assert channel_literals(tmp_path) == [
        "clarion/core/x.py:1: 'email'",
        "clarion/core/x.py:1: 'push'",
    ]


def test_every_builtin_channel_is_registered_with_its_traits():
    specs = registry.specs()
    assert list(specs)[:4] == ["in_app", "email", "push", "webhook"]
    assert registry.inbox() == "in_app" and "in_app" not in registry.external()
    assert registry.subscriber_channels()[:3] == ("in_app", "email", "push")
    assert registry.digest_channels()[:2] == ("email", "push")
    assert {"email", "push"} <= registry.quiet_hours_channels()
    assert "webhook" not in registry.quiet_hours_channels() | set(registry.subscriber_channels())


def test_a_channel_is_given_only_the_template_fields_it_declares():
    from clarion.core.deliver_jobs import content_of as _content
    from clarion.core.templates import Rendered

    class Renderer:
        def render(self, key, channel, locale, data, share=None):
            return Rendered(subject="S", html="<p>H</p>", text="T")

    notification = type("N", (), {"template": "t", "template_data": {}, "id": 1})()
    subscriber = type("S", (), {"locale": "en"})()
    assert _content(Renderer(), "push", notification, subscriber) == (
        {"subject": "S", "text": "T"},
        None,
    )
    assert _content(Renderer(), "email", notification, subscriber)[0]["html"] == "<p>H</p>"


def test_a_channel_commits_at_least_one_outcome_at_a_time():
    import pytest

    with pytest.raises(ValueError, match="outcomes_per_commit"):
        registry.ChannelSpec(key="pager", sender="x:Y", outcomes_per_commit=0)
    assert registry.spec("email").outcomes_per_commit == 1  # one message in flight at a kill
    assert registry.spec("push").outcomes_per_commit == 25
