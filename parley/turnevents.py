"""The events of a chat turn's stream (:mod:`parley.turnstream`), typed like the queue contracts.

One entry per event: field ``k`` the kind, field ``d`` the event as compact JSON. In order: one
:class:`SourcesEvent` (the gateway), :class:`TokenEvent` s (the worker; one entry carries the text
of every token of one flush, ``n`` of them), then exactly one terminal event: :class:`FinalEvent`,
:class:`ErrorEvent` or :class:`CancelledEvent`. :func:`fields` makes an entry, :func:`parse` reads
one; nothing else builds or parses the JSON.

Readers are tolerant: unknown fields are kept (and relayed to the client as they were written),
so a newer writer's extra field never breaks an older gateway; an entry of a kind the reader does
not know raises :class:`UnknownEvent` (a reader may skip it); a known kind whose data does not
validate raises :class:`MalformedEvent`, saying which entry, kind and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from parley.contracts import problems
from parley.errors import ParleyError


class MalformedEvent(ParleyError):
    """A turn stream entry that is not a valid event of its kind."""

    reason = "bad_event"


class UnknownEvent(MalformedEvent):
    """A turn stream entry of a kind this reader does not know (a newer writer's)."""


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")
    kind: ClassVar[str]

    def data(self) -> dict[str, Any]:
        """The event as written (JSON-ready): the fields set, unknown ones included."""
        return self.model_dump(mode="json", exclude_unset=True)


class SourcesEvent(_Event):
    """The numbered sources the answer may cite (each a :class:`parley.contracts.Source` as
    JSON, kept as the gateway wrote it). Written by the gateway before the turn is queued."""

    kind: ClassVar[str] = "sources"
    sources: list[dict[str, Any]] = Field(default_factory=list)
    conversation_id: str | None = None


class TokenEvent(_Event):
    """The text of ``n`` tokens, appended in one flush."""

    kind: ClassVar[str] = "token"
    text: str
    n: int = Field(default=1, ge=1)


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    source: str | None = None  # "backend": the model server counted; "worker": estimated


class FinalEvent(_Event):
    """The end of an answer: the checked text, the citations it uses, the figures no cited
    source holds (``unsupported_numbers``), usage and timings."""

    kind: ClassVar[str] = "final"
    text: str = ""
    citations: list[dict[str, Any]] = Field(default_factory=list)
    unsupported_numbers: list[str] = Field(default_factory=list)
    removed_citations: list[int] = Field(default_factory=list)
    answer_mode: str | None = None
    found: bool | None = None
    finish_reason: str | None = None
    model: str | None = None
    usage: Usage | None = None
    timings: dict[str, float | None] | None = None


class ErrorEvent(_Event):
    """The turn failed: ``code`` (a chat protocol error code), ``message`` for people,
    ``hint`` what to do, ``retry_after`` seconds before asking again (rate limits)."""

    kind: ClassVar[str] = "error"
    code: str = Field(min_length=1)
    message: str
    hint: str | None = None
    retry_after: float | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        # Older writers named the code ``reason`` and could leave the message out.
        if isinstance(value, Mapping):
            value = dict(value)
            value.setdefault("code", str(value.get("reason") or "model_error"))
            value.setdefault("message", "the model failed to answer")
        return value


class CancelledEvent(_Event):
    """Generation stopped: ``reason`` ``cancelled`` (asked for) or ``orphaned`` (no gateway
    relayed the turn any more)."""

    kind: ClassVar[str] = "cancelled"
    completion_tokens: int = Field(default=0, ge=0)
    reason: str = "cancelled"


Event = SourcesEvent | TokenEvent | FinalEvent | ErrorEvent | CancelledEvent
KINDS: dict[str, type[Event]] = {
    c.kind: c for c in (SourcesEvent, TokenEvent, FinalEvent, ErrorEvent, CancelledEvent)
}
TERMINAL: frozenset[str] = frozenset({"final", "error", "cancelled"})


@dataclass(frozen=True)
class TurnEvent:
    """An event read from a turn's stream at ``offset`` (its entry id)."""

    offset: str
    event: Event

    @property
    def kind(self) -> str:
        return self.event.kind

    @property
    def terminal(self) -> bool:
        return self.event.kind in TERMINAL

    @property
    def data(self) -> dict[str, Any]:
        return self.event.data()


def make(kind: str, data: Mapping[str, Any]) -> Event:
    """The event of ``kind`` with ``data``; raises :class:`MalformedEvent` (or
    :class:`UnknownEvent`) saying what is wrong."""
    model = KINDS.get(kind)
    if model is None:
        raise UnknownEvent(f"unknown turn event kind {kind!r} (known: {', '.join(KINDS)})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise MalformedEvent(f"malformed {kind!r} turn event: {problems(exc)}") from exc


def fields(event: Event) -> dict[str, str]:
    """The fields of the stream entry that carries ``event``."""
    # One call into pydantic-core (compact, UTF-8 unescaped): this runs for every flush of
    # every turn, on the token path.
    return {"k": event.kind, "d": event.model_dump_json(exclude_unset=True)}


def parse(offset: str, entry: Mapping[Any, Any]) -> TurnEvent:
    """The event in one stream entry (the inverse of :func:`fields`). Raises
    :class:`UnknownEvent` for a kind this reader does not know and :class:`MalformedEvent`
    for anything else that is not an event, naming the entry."""
    raw_kind = entry.get(b"k", entry.get("k"))
    raw_data = entry.get(b"d", entry.get("d"))
    kind = raw_kind.decode() if isinstance(raw_kind, bytes) else raw_kind
    if not kind:
        raise MalformedEvent(f"turn stream entry {offset} has no kind ('k')")
    model = KINDS.get(kind)
    if model is None:
        raise UnknownEvent(f"turn stream entry {offset}: unknown kind {kind!r}")
    try:
        return TurnEvent(offset, model.model_validate_json(raw_data or b"{}"))
    except ValidationError as exc:
        raise MalformedEvent(
            f"turn stream entry {offset}: malformed {kind!r} event: {problems(exc)}"
        ) from exc
