"""The built-in rule packs: lifecycle, system, insight, activities."""
