"""Built-in rule pack: insight (see the README, "Rule engine")."""

RULES: list = []
