"""Where rules come from, and the config each one runs with.

Rules: the built-in packs, every ``clarion.rules`` entry point (a producer's package ships
``[project.entry-points."clarion.rules"] mypack = "mypack.rules"``), and the modules named
in ``CLARION_RULE_MODULES``. A module (or entry point) offers its rules as ``RULES``, a
list of Rule classes; an entry point may also name one Rule class.

Config, later wins: the rule's defaults, ``CLARION_RULES["<pack>"]``,
``CLARION_RULES["<key>"]``, then the operator's override stored by the API. A config that
does not validate is an error naming the rule, raised when the rules are loaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from pydantic import ValidationError

from clarion.engine.rules import Rule, RuleConfig
from clarion.settings import Settings

ENTRY_POINT_GROUP = "clarion.rules"
BUILTIN_MODULES = (
    "clarion.engine.packs.lifecycle",
    "clarion.engine.packs.system",
    "clarion.engine.packs.insight",
    "clarion.engine.packs.activities",
)


class RuleError(ValueError):
    """A rule that cannot be loaded: unknown key, duplicate key, or a config that fails."""


def _rules_of(obj: Any, origin: str) -> list[type[Rule]]:
    if isinstance(obj, type) and issubclass(obj, Rule):
        return [obj]
    rules = getattr(obj, "RULES", None)
    if rules is None:
        raise RuleError(f"{origin} offers no RULES list and is not a Rule class")
    return list(rules)


def discover(settings: Settings) -> dict[str, type[Rule]]:
    """Every rule class this deployment knows, by key."""
    sources: list[tuple[str, Any]] = []
    for name in (*BUILTIN_MODULES, *settings.rule_modules):
        sources.append((name, importlib.import_module(name)))
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        sources.append((f"entry point {ep.name}", ep.load()))
    found: dict[str, type[Rule]] = {}
    for origin, obj in sources:
        for rule in _rules_of(obj, origin):
            if rule.key in found and found[rule.key] is not rule:
                raise RuleError(f"rule key {rule.key!r} is defined twice (again in {origin})")
            found[rule.key] = rule
    return found


class Rules:
    """The rules of one deployment, with their configs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.classes = discover(settings)
        unknown = set(settings.rules) - set(self.classes) - {r.pack for r in self.classes.values()}
        if unknown:
            raise RuleError(f"CLARION_RULES names unknown rules or packs: {sorted(unknown)}")
        for key in self.classes:  # validate every configured rule at load time
            self.build(key)

    def __contains__(self, key: str) -> bool:
        return key in self.classes

    def config_of(self, key: str, override: dict[str, Any] | None = None) -> RuleConfig:
        cls = self.classes.get(key)
        if cls is None:
            raise RuleError(f"no rule {key!r}")
        values = {**self.settings.rules.get(cls.pack, {}), **self.settings.rules.get(key, {})}
        values.update(override or {})
        try:  # the mode decides which source drivers are accepted (engine/sources.py)
            return cls.Config.model_validate(values, context={"mode": self.settings.mode})
        except ValidationError as exc:
            raise RuleError(f"rule {key!r}: invalid config: {exc}") from None

    def build(self, key: str, override: dict[str, Any] | None = None) -> Rule:
        return self.classes[key](self.config_of(key, override))

    def scan_schedule(self) -> dict[str, float]:
        """Seconds between beat runs of each scan rule (settings only: beat reads it once)."""
        schedule = {}
        for key in self.classes:
            rule = self.build(key)
            if rule.schedule_seconds:
                schedule[key] = rule.schedule_seconds
        return schedule

    def for_event(self, event_type: str) -> list[str]:
        return sorted(k for k, c in self.classes.items() if c.event_type == event_type)
