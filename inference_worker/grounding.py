"""Checking an answer against its sources, pure: text and numbered sources in, the checked text
and what was wrong with it out. Run on every answer before its ``final`` event.

1. **Unknown citations are removed.** A marker ``[n]`` whose numbers name no source of the turn
   is deleted from the text; in ``[1, 9]`` only the ``9`` goes. Their numbers are reported
   (``removed_citations``).
2. **Uncited sentences are attributed** (``attribute=True``, used for generated answers): a
   sentence without a marker gets the ``[n]`` of the source that shares most of its content
   words, when that source holds at least half of them; otherwise it stays uncited.
3. **Numbers are checked.** Every figure of the answer (outside citation markers; one-digit
   counts and list numbers aside) must appear in one of the sources the answer cites, or in the
   question itself (a source's figures include those of its document's name and context); the
   others are ``unsupported_numbers``, as written in the answer. Figures
   compare without thousands separators, currency signs or trailing zeros after a point
   ("$81,797" = "81797", "12.50%" = "12.5"). An answer that cites nothing has every figure
   unsupported. A share worked out in the answer with its working shown
   (``21,213 / 81,797 × 100 = 25.93%``) is supported when its two figures are and the result is
   right (:func:`derived`). A figure written in full from a scaled one ("102,673,000" for the
   "102,673" of a table "(in thousands)", "18,000,000,000" for "$18.0 billion") is supported
   only when the cited source declares that unit: a figure of a source that says "in
   thousands", "in millions" or "in billions" (in its text, or in the caption it carries of the
   table it continues, ``Source.unit``) also stands for itself times that unit, and a
   figure the source writes with a unit word ("$18.0 billion", "365 million") for itself times
   it (:func:`scaled_figures`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from inference_worker.citations import MARKER, cited_numbers
from inference_worker.extractive import figure, terms
from inference_worker.tables import MULTIPLIER
from parley.contracts import Source

# A figure as written in an answer: "$81,797", "12.5%", "(1,680)", "2023", "3.3".
_FIGURE = re.compile(r"(?<![\w.])\$?\d[\d,]*(?:\.\d+)?%?")
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")
_LIST_NUMBER = re.compile(r"^\s*\d{1,2}[.)]\s")


@dataclass(frozen=True)
class Checked:
    """An answer after the checks: ``text`` to show and record, the source numbers it cites
    (first citation first), the unknown ones removed, and the unsupported figures."""

    text: str
    cited: tuple[int, ...]
    removed_citations: tuple[int, ...]
    unsupported_numbers: tuple[str, ...]


def strip_unknown(text: str, known: set[int]) -> tuple[str, list[int]]:
    """``text`` without citation numbers outside ``known``, and those numbers."""
    removed: list[int] = []

    def keep(match: re.Match[str]) -> str:
        numbers = cited_numbers(match.group(0))
        good = [n for n in numbers if n in known]
        removed.extend(n for n in numbers if n not in known and n not in removed)
        if len(good) == len(numbers):
            return match.group(0)
        return "".join(f"[{n}]" for n in good)

    cleaned = MARKER.sub(keep, text)
    if removed:
        cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", cleaned))
    return cleaned, removed


def attribute(text: str, sources: Sequence[Source], *, least: float = 0.5) -> str:
    """Each sentence without a citation marker gets ``[n]`` of the source sharing most of its
    content words, if that source holds at least ``least`` of them."""
    if not sources:
        return text
    vocab = {s.n: set(terms(s.text + " " + s.document + " " + s.context)) for s in sources}
    out: list[str] = []
    last = 0
    for match in _SENTENCE.finditer(text):
        sentence = match.group(0)
        out.append(text[last:match.start()])
        last = match.end()
        words = set(terms(sentence))
        if MARKER.search(sentence) or len(words) < 2:
            out.append(sentence)
            continue
        n, share = max(((s, len(words & v) / len(words)) for s, v in vocab.items()),
                       key=lambda item: item[1])
        if share < least:
            out.append(sentence)
            continue
        stripped = sentence.rstrip()
        end = len(stripped) - len(stripped.rstrip(".!?"))
        body, stop = stripped[: len(stripped) - end], stripped[len(stripped) - end:]
        out.append(f"{body} [{n}]{stop}{sentence[len(stripped):]}")
    out.append(text[last:])
    return "".join(out)


def figures(text: str) -> list[tuple[str, str]]:
    """The figures of an answer as (written, compared) pairs, in order, leaving out citation
    markers, list numbers ("1. ") and one-digit counts without a unit."""
    found: list[tuple[str, str]] = []
    for line in MARKER.sub(" ", text).splitlines():
        line = _LIST_NUMBER.sub(" ", line)
        for match in _FIGURE.finditer(line):
            written = match.group(0).rstrip(",")
            value = figure(written.strip("$%"))
            if len(value.replace(".", "")) < 2 and "$" not in written and "%" not in written:
                continue
            found.append((written, value))
    return found


def source_figures(text: str) -> set[str]:
    return {value for _written, value in figures(text)} | {
        figure(m.group(0).strip("$%")) for m in _FIGURE.finditer(text)
    }


_DECLARED = re.compile(r"\bin\s+(thousand|million|billion)s\b", re.IGNORECASE)
_WITH_UNIT = re.compile(r"(?<![\w.])\$?(\d[\d,]*(?:\.\d+)?)\s*(thousand|million|billion)\b",
                        re.IGNORECASE)


def _times(value: str, unit: str) -> str | None:
    try:
        full = Decimal(value.replace(",", "")) * MULTIPLIER[unit.lower()]
    except InvalidOperation:
        return None
    return figure(format(full.normalize(), "f"))


def scaled_figures(text: str) -> set[str]:
    """The full figures a source vouches for beyond those it writes: each of its figures times
    each unit it declares ("(in thousands)", "dollars in millions"), and each figure written
    with a unit word ("$18.0 billion" -> 18000000000)."""
    out: set[str] = set()
    for m in _WITH_UNIT.finditer(text):
        full = _times(m.group(1), m.group(2))
        if full:
            out.add(full)
    units = {m.group(1).lower() for m in _DECLARED.finditer(text)}
    if units:
        values = {figure(m.group(0).strip("$%")) for m in _FIGURE.finditer(text)}
        for unit in units:
            for value in values:
                full = _times(value, unit)
                if full:
                    out.add(full)
    return out


# A share worked out in the answer: "21,213 / 81,797 × 100 = 25.93%".
_SHARE = re.compile(r"(\$?\d[\d,]*(?:\.\d+)?)\s*/\s*(\$?\d[\d,]*(?:\.\d+)?)\s*[×x*]\s*100\s*="
                    r"\s*(\d+(?:\.\d+)?)\s*%")


def derived(text: str, allowed: set[str]) -> set[str]:
    """Figures of ``text`` worked out from supported ones and shown with their working: in
    ``A / B × 100 = C%`` with A and B in ``allowed``, the 100 and C when C is A/B in percent,
    rounded as written. A wrong result stays unsupported."""
    out: set[str] = set()
    for match in _SHARE.finditer(text):
        a, b, c = (figure(g.strip("$")) for g in match.groups())
        if a not in allowed or b not in allowed or float(b) == 0:
            continue
        decimals = len(c.split(".")[1]) if "." in c else 0
        if abs(float(a) / float(b) * 100 - float(c)) <= 0.5 * 10 ** -decimals + 1e-9:
            out |= {"100", c}
    return out


def check(
    text: str, sources: Sequence[Source], *, question: str = "", attribute_uncited: bool = False
) -> Checked:
    """Run the three checks (see the module's docstring) on one answer."""
    known = {s.n for s in sources}
    cleaned, removed = strip_unknown(text, known)
    if attribute_uncited:
        cleaned = attribute(cleaned, sources)
    cited = tuple(n for n in cited_numbers(cleaned) if n in known)
    by_number = {s.n: s for s in sources}
    allowed = source_figures(question)
    for n in cited:
        cited_source = by_number[n]
        allowed |= source_figures(
            f"{cited_source.text} {cited_source.context} {cited_source.document}")
        allowed |= scaled_figures(f"{cited_source.unit or ''}\n{cited_source.text}")
    allowed |= derived(cleaned, allowed)
    unsupported: dict[str, None] = {}
    for written, value in figures(cleaned):
        if value not in allowed:
            unsupported.setdefault(written, None)
    return Checked(cleaned, cited, tuple(removed), tuple(unsupported))
