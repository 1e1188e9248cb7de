"""How many SMS segments a text takes: GSM-7 when every character is in the GSM 03.38
alphabet (extension characters count twice), else UCS-2 (UTF-16 code units).

One segment holds 160 GSM-7 or 70 UCS-2 units; a multipart message loses room to its
concatenation header: 153 or 67 units per segment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")  # sent as ESC + character: two units
LIMITS = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


@dataclass(frozen=True)
class Count:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets or UTF-16 code units
    segments: int


def _units(text: str) -> tuple[str, int]:
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        return "GSM-7", sum(2 if c in GSM7_EXTENSION else 1 for c in text)
    return "UCS-2", len(text.encode("utf-16-le")) // 2


def count(text: str) -> Count:
    encoding, units = _units(text)
    single, multi = LIMITS[encoding]
    segments = 1 if units <= single else math.ceil(units / multi)
    return Count(encoding, units, segments)


def fit(text: str, max_segments: int) -> str:
    """``text``, cut (with an ellipsis) to at most ``max_segments`` segments."""
    if count(text).segments <= max_segments:
        return text
    encoding, _ = _units(text)
    ellipsis = "..." if encoding == "GSM-7" else "…"
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if count(text[:mid].rstrip() + ellipsis).segments <= max_segments:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + ellipsis
