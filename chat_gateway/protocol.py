"""The websocket chat protocol: client messages (validated with pydantic) and server events
(plain JSON objects built here). The reference for people is ``docs/chat-protocol.md``.

Every server event has ``type``; events of a turn also carry ``turn_id`` and ``offset`` (the
Redis entry id of the event in the turn's stream: resume from the last one seen).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from parley.contracts import AnswerMode, loads

MAX_QUESTION_CHARS = 4000
# A client message above this many bytes gets a ``too_large`` error and the connection carries
# on; above the transport limit (``ws_max_size``, larger) the library closes with 1009.
MAX_MESSAGE_BYTES = 16 * 1024

# Close codes (4000-4999 are the application's).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NORMAL = 1000  # sent by a client: "I am done"; a running turn is cancelled at once
CLOSE_GOING_AWAY = 1001  # server shutdown; clients reconnect and resume elsewhere


class ErrorCode(StrEnum):
    UNAUTHENTICATED = "unauthenticated"
    TOKEN_EXPIRED = "token_expired"
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    UNKNOWN_TYPE = "unknown_type"
    BUSY = "busy"
    NOT_FOUND = "not_found"
    NO_DOCUMENTS = "no_documents"
    RATE_LIMITED = "rate_limited"
    MODEL_UNAVAILABLE = "model_unavailable"
    RETRIEVAL_UNAVAILABLE = "retrieval_unavailable"
    INTERNAL = "internal"
    GOING_AWAY = "going_away"  # the gateway is shutting down: resume the turn elsewhere


class _Client(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Auth(_Client):
    """First message of a browser, which cannot set an Authorization header on a websocket;
    sent again later with a fresh token of the same tenant, it re-authenticates the session
    (before the first token expires, or the session ends with ``token_expired``)."""

    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=8192)


class Ask(_Client):
    type: Literal["ask"]
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    conversation_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    answer_mode: AnswerMode | None = Field(
        default=None, description="extractive or generative; default: the gateway's setting"
    )


class Cancel(_Client):
    type: Literal["cancel"]
    turn_id: str | None = Field(default=None, description="default: this connection's turn")


class Resume(_Client):
    type: Literal["resume"]
    turn_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    offset: str = Field(default="0-0", pattern=r"^\d{1,20}-\d{1,20}$")


class Ping(_Client):
    type: Literal["ping"]


class Feedback(_Client):
    """A rating of a finished answer, with an optional comment; a second one replaces it.
    ``conversation_id`` lets the server find an answer older than its turn's stream."""

    type: Literal["feedback"]
    turn_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)
    conversation_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")


ClientMessage = Annotated[
    Auth | Ask | Cancel | Resume | Ping | Feedback, Field(discriminator="type")
]
_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
_TYPES = frozenset({"auth", "ask", "cancel", "resume", "ping", "feedback"})


class ProtocolError(Exception):
    """A client message the server cannot act on; answered with a typed error event."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse(raw: str | bytes) -> ClientMessage:
    """One client frame -> a message, or :class:`ProtocolError` saying what is wrong with it."""
    if isinstance(raw, bytes):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "binary frames are not accepted: send JSON text")
    if len(raw) > MAX_MESSAGE_BYTES or len(raw.encode()) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"message larger than {MAX_MESSAGE_BYTES} bytes"
        )
    try:
        data = loads(raw)
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a message is a JSON object with a 'type'")
    kind = data.get("type")
    if kind not in _TYPES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {kind!r}; expected one of {', '.join(sorted(_TYPES))}",
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "message"
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{kind}: {where}: {first['msg']}") from None


def error(
    code: ErrorCode | str,
    message: str,
    *,
    hint: str | None = None,
    retry_after: float | None = None,
    turn_id: str | None = None,
    offset: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "error", "code": str(code), "message": message}
    if hint:
        event["hint"] = hint
    if retry_after is not None:
        event["retry_after"] = round(retry_after, 3)
    if turn_id:
        event["turn_id"] = turn_id
    if offset:
        event["offset"] = offset
    return event


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
