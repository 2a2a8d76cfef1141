"""Identifiers that travel between parts. NewTypes: free at run time, checked by mypy."""

from __future__ import annotations

import hashlib
import uuid
from typing import NewType

TenantId = NewType("TenantId", str)
DocumentId = NewType("DocumentId", str)
ChunkId = NewType("ChunkId", str)
TurnId = NewType("TurnId", str)
ConversationId = NewType("ConversationId", str)
TraceId = NewType("TraceId", str)
MessageId = NewType("MessageId", str)


def document_id(tenant: str, path: str) -> DocumentId:
    """Stable id of the document behind one blob path: the same path is the same document,
    so a re-upload replaces it instead of adding a twin."""
    digest = hashlib.sha256(f"{tenant}\x00{path}".encode()).hexdigest()
    return DocumentId(digest[:24])


def new_trace_id() -> TraceId:
    """A W3C-compatible 32-hex-digit trace id."""
    return TraceId(uuid.uuid4().hex)


def new_turn_id() -> TurnId:
    return TurnId(uuid.uuid4().hex)
