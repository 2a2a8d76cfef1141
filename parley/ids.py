"""Identifiers that travel between parts. NewTypes: free at run time, checked by mypy."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import NewType

TenantId = NewType("TenantId", str)
DocumentId = NewType("DocumentId", str)
ChunkId = NewType("ChunkId", str)
TurnId = NewType("TurnId", str)
ConversationId = NewType("ConversationId", str)
TraceId = NewType("TraceId", str)
MessageId = NewType("MessageId", str)

#: What a tenant name may be. Held to by the gateway (tokens, Entra claims) and by every worker
#: (message fields, blob paths): a tenant names Redis keys, Chroma collections and the first
#: segment of its blob paths, so nothing else may pass for one.
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def is_tenant(value: str) -> bool:
    return TENANT_PATTERN.match(value) is not None


def path_tenant(path: str, default_tenant: str) -> str:
    """The tenant a blob path belongs to: its first segment (``acme/a.pdf`` -> ``acme``), or
    ``default_tenant`` for a one-segment path. Not checked: see :func:`is_tenant`."""
    head, sep, _rest = path.lstrip("/").partition("/")
    return head if sep else default_tenant


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
