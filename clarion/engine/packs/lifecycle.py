"""Built-in rule pack: lifecycle (see the README, "Rule engine")."""

RULES: list = []
