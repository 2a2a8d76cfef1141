"""The embedding-text rule: what is embedded (and lexically indexed) for a chunk. The embed worker
applies it to every chunk it writes, the re-embedding sweep to every chunk it copies and the
lexical index to every chunk it indexes, so one rule keeps them comparable.

A chunk's header names its document: the document's context (entity, title, period: see
:class:`parley.contracts.DocumentContext`), then the file name without its extension when it adds
something, then the section heading. Questions that name a company, a period or a section then
find the chunks of the right document even though the chunk's own text never says which report
it belongs to (a table row "Total net sales 81,797 82,959" is in every quarterly report)."""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Mapping

from parley.contracts import DocumentContext

#: Chunk metadata keys that carry the document's context (Chroma metadata, search hits).
CONTEXT_KEYS = ("title", "entity", "period", "period_end")


def document_text(
    filename: str, text: str, heading: str | None, context: DocumentContext | None = None
) -> str:
    """The header (see the module docstring) and the chunk's text, on two lines."""
    return f"{header(filename, heading, context)}\n{text}"


def header(filename: str, heading: str | None, context: DocumentContext | None = None) -> str:
    """One short line: ``entity · title · period, period ended <date> · file name — heading``;
    parts the document does not give are left out, and the file name when the context already
    says all of it."""
    name = posixpath.splitext(posixpath.basename(filename))[0]
    parts: list[str] = []
    if context is not None:
        parts += [p for p in (context.entity, context.title) if p]
        when = [context.period] if context.period else []
        if context.period_end:
            when.append(f"period ended {long_date(context.period_end)}")
        if when:
            parts.append(", ".join(when))
    said = " ".join(parts).lower()
    if name and name.lower() not in said:
        parts.append(name)
    line = " · ".join(parts)
    return f"{line} — {heading}" if heading else line


def context_metadata(context: DocumentContext | None) -> dict[str, str]:
    """The context as chunk metadata (keys of :data:`CONTEXT_KEYS`, unset fields left out)."""
    if context is None:
        return {}
    return {k: v for k in CONTEXT_KEYS if (v := getattr(context, k))}


def context_of(metadata: Mapping[str, object]) -> DocumentContext | None:
    """The context back from chunk metadata (None when the chunk has none: written before
    contexts existed)."""
    found = {k: str(metadata[k]) for k in CONTEXT_KEYS if metadata.get(k)}
    if not found:
        return None
    try:
        return DocumentContext(**found)
    except ValueError:
        return None


def long_date(iso: str) -> str:
    """``2023-07-01`` -> ``July 1, 2023`` (the way reports write dates); unparsable: as given."""
    try:
        day = dt.date.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{day.strftime('%B')} {day.day}, {day.year}"
