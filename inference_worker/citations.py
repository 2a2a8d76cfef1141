"""Which of a turn's numbered sources an answer actually cites. Pure: text in, sources out.

The prompt numbers sources ``[1]``, ``[2]`` ...; models cite them as ``[1]``, ``[1, 3]``,
``[1][2]``, ``[1-3]`` or ``[Source 2]``. A number with no source of that number (a made-up
citation) is dropped, not invented into one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from parley.contracts import Source

# A citation marker: "[1]", "[1, 2]", "[1,2 ; 3]", "[1-3]", "[source 2]", "[Sources 1 and 4]"
MARKER = re.compile(
    r"\[\s*(?:sources?\s*)?(\d{1,3}(?:\s*(?:,|;|-|\u2013|and)\s*\d{1,3})*)\s*\]", re.IGNORECASE
)
_PART = re.compile(r"(\d{1,3})\s*(?:(?:-|\u2013)\s*(\d{1,3}))?")
_MAX_RANGE = 20  # "[1-999]" is not a citation of 999 sources


def cited_numbers(text: str) -> list[int]:
    """Source numbers cited in ``text``, in order of first citation, without repeats."""
    seen: dict[int, None] = {}
    for marker in MARKER.finditer(text):
        for part in _PART.finditer(marker.group(1)):
            low = int(part.group(1))
            high = int(part.group(2)) if part.group(2) else low
            if high < low or high - low > _MAX_RANGE:
                high = low
            for n in range(low, high + 1):
                seen.setdefault(n, None)
    return list(seen)


def citations(text: str, sources: Sequence[Source]) -> list[dict[str, Any]]:
    """The sources ``text`` cites, in order of first citation, as the ``final`` event carries
    them (everything of a source but its full text)."""
    by_number = {s.n: s for s in sources}
    return [
        by_number[n].model_dump(mode="json", exclude={"text"})
        for n in cited_numbers(text)
        if n in by_number
    ]
