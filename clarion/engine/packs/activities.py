"""Built-in rule pack: activities (see the README, "Rule engine")."""

RULES: list = []
