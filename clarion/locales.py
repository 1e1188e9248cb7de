"""Locale tags: BCP 47 casing, and the chain of locales a template lookup tries.

Used by the template store (core) and by channels that pick a locale of their own (the
email sender's layout), so it sits below both.
"""

from __future__ import annotations


def canonical_locale(locale: str) -> str:
    """``ru_ru`` → ``ru-RU``: BCP 47 casing (language lower, region upper, script title)."""
    parts = [p for p in locale.replace("_", "-").split("-") if p]
    if not parts:
        return ""
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 2 or (len(part) == 3 and part.isdigit()):
            out.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())
        else:
            out.append(part.lower())
    return "-".join(out)


def locale_chain(locale: str | None, default_locale: str) -> list[str]:
    """The locales to try, most specific first: ``ru-RU → ru → en``."""
    chain: list[str] = []
    for value in (locale, default_locale):
        if not value:
            continue
        tag = canonical_locale(value)
        parts = tag.split("-")
        for i in range(len(parts), 0, -1):
            candidate = "-".join(parts[:i])
            if candidate and candidate not in chain:
                chain.append(candidate)
    return chain
