"""Built-in rule pack: system (see the README, "Rule engine")."""

RULES: list = []
