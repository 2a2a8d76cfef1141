"""The metadata kept beside every chunk in the vector store, typed: written by the embed worker,
copied by the re-embedding sweep, read back by search, citations, the lexical index and the CLI.

The store holds flat ``str | int | float | bool`` values and no None, so a :class:`ChunkMeta`
is flattened on the way in (:meth:`ChunkMeta.to_metadata`) and rebuilt on the way out
(:meth:`ChunkMeta.from_metadata`). The store adds the chunk's ``document_id`` and ``version``
itself (they are :class:`~parley.vectors.store.ChunkRecord` fields); a tenant is a collection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from parley.contracts import Chunk, ChunkBatch, DocumentContext
from parley.embedder.text import context_metadata, context_of, document_text
from parley.filetypes import KINDS, FileKind

Scalar = str | int | float | bool


@dataclass(frozen=True)
class ChunkMeta:
    """Where a chunk is and what its document is. ``page`` is 1-based (a PDF's page, a
    presentation's slide); ``heading`` the section (nearest heading, slide title, sheet name);
    ``ordinal`` its place in the document; ``kind`` the document's type by its bytes; ``ocr``
    marks text read from pixels; ``unit`` the caption declaring the unit of the table the chunk
    continues (:attr:`parley.contracts.Chunk.unit`)."""

    filename: str = ""
    path: str | None = None
    page: int | None = None
    heading: str | None = None
    ordinal: int | None = None
    tokens: int | None = None
    context: DocumentContext | None = None
    kind: FileKind | None = None
    ocr: bool = False
    unit: str | None = None

    @classmethod
    def of(cls, batch: ChunkBatch, chunk: Chunk) -> ChunkMeta:
        """The metadata of one chunk of a batch, as the embed worker writes it."""
        return cls(
            filename=batch.filename,
            path=batch.path,
            page=chunk.page,
            heading=chunk.heading,
            ordinal=chunk.ordinal,
            tokens=chunk.tokens,
            context=batch.context,
            kind=batch.kind,
            ocr=chunk.ocr,
            unit=chunk.unit,
        )

    def to_metadata(self) -> dict[str, Scalar]:
        """The flat form: unset fields left out, and ``ocr`` only on OCR'd chunks."""
        flat: dict[str, Scalar | None] = {
            "filename": self.filename,
            "path": self.path,
            "page": self.page,
            "heading": self.heading,
            "ordinal": self.ordinal,
            "tokens": self.tokens,
            **context_metadata(self.context),
            "kind": self.kind,
            "ocr": True if self.ocr else None,
            "unit": self.unit,
        }
        return {k: v for k, v in flat.items() if v is not None}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object]) -> ChunkMeta:
        """Back from the flat form. A value of the wrong type, a page below 1, an unknown kind
        or an empty heading reads as unset: chunks written by older versions or other tools
        lack fields (those before ``kind`` existed are PDF pages or DOCX sections)."""
        page = _number(metadata.get("page"))
        heading = metadata.get("heading")
        path = metadata.get("path")
        kind = metadata.get("kind")
        return cls(
            filename=str(metadata.get("filename", "")),
            path=str(path) if path is not None else None,
            page=page if page is not None and page >= 1 else None,
            heading=str(heading) if heading else None,
            ordinal=_number(metadata.get("ordinal")),
            tokens=_number(metadata.get("tokens")),
            context=context_of(metadata),
            kind=next((k for k in KINDS if k == kind), None),
            ocr=metadata.get("ocr") is True,
            unit=str(unit) if (unit := metadata.get("unit")) else None,
        )

    def document_text(self, text: str) -> str:
        """What is embedded and lexically indexed for a chunk with this metadata
        (:func:`parley.embedder.text.document_text`)."""
        return document_text(self.filename, text, self.heading, self.context)


def _number(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
