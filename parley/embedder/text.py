"""The embedding-text rule: what is embedded for a chunk. The embed worker applies it to every
chunk it writes and the re-embedding sweep to every chunk it copies, so one rule keeps the two
collections of a tenant comparable."""

from __future__ import annotations

import posixpath


def document_text(filename: str, text: str, heading: str | None) -> str:
    """What is embedded for a chunk: a short header naming the document (its file name without the
    extension) and section before the text, so questions that name a document or section find its
    chunks. The re-embedding sweep rebuilds it from the stored chunk and its metadata."""
    title = posixpath.splitext(filename)[0]
    header = f"{title} — {heading}" if heading else title
    return f"{header}\n{text}"
