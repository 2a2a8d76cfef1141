"""Feedback on answers: a rating (``up``/``down``) and an optional comment, sent over the
websocket (``{"type": "feedback"}``, docs/chat-protocol.md) or the OpenAI-compatible face's extra
endpoint ``POST /v1/feedback``, stored with what was asked and answered: the question, the
answer, its sources and the model. A second rating of the same answer replaces the first.

Records live in one Redis hash (turn id -> JSON) with no expiry; ``parley feedback export --json``
writes them as an evaluation set (JSON lines, :func:`eval_line`) that ``python -m bench answers``
reads. Counted in ``parley_feedback_total{rating,face}``.

What the record holds is read back from where the turn left it: the turn's metadata (question,
tenant; kept ``stream_ttl`` seconds) and its stream (sources, the final answer and model); after
those expired, from the conversation's kept transcript (websocket turns, when the client names
the conversation)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chat_gateway.auth import AuthError, Principal, bearer
from chat_gateway.conversation_store import ConversationStore
from chat_gateway.web import BodyTooLarge, ClientGone, Request, json_response
from parley import metrics, turnevents
from parley.errors import ParleyError
from parley.keys import Keys

Rating = Literal["up", "down"]
MAX_COMMENT_CHARS = 2000
TURN_ID = r"^[0-9a-f]{32}$"
_BODY_LIMIT = 16 * 1024


class NotFound(ParleyError):
    """No answer to rate: the turn is unknown, another tenant's, expired or not answered."""

    def __init__(self, message: str = "no answer to rate under that turn id") -> None:
        super().__init__(message, reason="not_found",
                         hint="rate an answer that finished, within its conversation's retention")


@dataclass(frozen=True)
class Record:
    turn_id: str
    tenant: str
    subject: str
    rating: Rating
    comment: str | None
    question: str
    answer: str
    sources: tuple[dict[str, Any], ...]
    model: str | None
    conversation_id: str | None
    face: str  # websocket | openai
    created: float


def eval_line(record: Record) -> dict[str, Any]:
    """One line of the evaluation set (docs/chat-protocol.md, "Feedback"): what ``bench answers``
    reads. ``reference`` (the expected answer) is null: someone may fill it in."""
    return {
        "question": record.question,
        "answer": record.answer,
        "reference": None,
        "sources": [{k: s.get(k) for k in ("n", "document", "document_id", "page", "text")}
                    for s in record.sources],
        "rating": record.rating,
        "comment": record.comment,
        "model": record.model,
        "turn_id": record.turn_id,
        "tenant": record.tenant,
        "created": record.created,
    }


class FeedbackStore:
    def __init__(self, client: aioredis.Redis, *, keys: Keys) -> None:
        self._redis = client
        self._key = keys.feedback()

    async def save(self, record: Record) -> None:
        data = asdict(record)
        data["sources"] = list(record.sources)
        await self._redis.hset(self._key, record.turn_id, json.dumps(data, ensure_ascii=False))
        metrics.FEEDBACK.labels(rating=record.rating, face=record.face).inc()

    async def ratings(self, turn_ids: list[str]) -> dict[str, Rating]:
        """turn id -> its rating, for the turns that have one."""
        if not turn_ids:
            return {}
        raw = await self._redis.hmget(self._key, turn_ids)
        return {t: json.loads(r)["rating"] for t, r in zip(turn_ids, raw, strict=True) if r}

    async def all(self, tenant: str | None = None) -> list[Record]:
        """Every record (of one tenant when given), oldest first."""
        records: list[Record] = []
        async for _field, raw in self._redis.hscan_iter(self._key, count=500):
            data = json.loads(raw)
            if tenant is None or data["tenant"] == tenant:
                data["sources"] = tuple(data.get("sources") or ())
                records.append(Record(**data))
        return sorted(records, key=lambda r: r.created)


async def resolve(
    client: aioredis.Redis,
    keys: Keys,
    store: ConversationStore,
    principal: Principal,
    turn_id: str,
    conversation_id: str | None,
) -> tuple[str, str, tuple[dict[str, Any], ...], str | None, str | None]:
    """(question, answer, sources, model, conversation id) of a finished turn of the caller's
    tenant, else :class:`NotFound`."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.get(keys.turn_meta(turn_id))
        pipe.xrange(keys.turn(turn_id), "-", "+", count=1)
        pipe.xrevrange(keys.turn(turn_id), "+", "-", count=1)
        raw_meta, first, last = await pipe.execute()
    if raw_meta is not None:
        meta = json.loads(raw_meta)
        if meta.get("tenant") != principal.tenant:
            raise NotFound()
        sources = _event(first, "sources")
        final = _event(last, "final")
        if final is None or "question" not in meta:
            raise NotFound("that turn has no finished answer to rate")
        return (str(meta["question"]), str(final.get("text", "")),
                tuple((sources or {}).get("sources") or ()), final.get("model"),
                meta.get("conversation_id") if meta.get("persist") else None)
    if conversation_id:
        transcript = await store.open(principal.tenant, principal.subject, conversation_id)
        if transcript is not None:
            question, answer = transcript.turn(turn_id)
            if question is not None and answer is not None:
                return (str(question["content"]), str(answer["content"]),
                        tuple(answer.get("sources") or ()), answer.get("model"), conversation_id)
    raise NotFound()


def _event(entries: list[Any], kind: str) -> dict[str, Any] | None:
    for offset, entry in entries:
        try:
            event = turnevents.parse(str(offset), entry)
        except turnevents.MalformedEvent:
            return None  # nothing readable to rate
        if event.kind == kind:
            return event.data
    return None


async def rate(
    client: aioredis.Redis,
    keys: Keys,
    store: ConversationStore,
    feedback: FeedbackStore,
    principal: Principal,
    *,
    turn_id: str,
    rating: Rating,
    comment: str | None,
    conversation_id: str | None,
    face: str,
) -> Record:
    """Store (or replace) the caller's feedback on one answer."""
    question, answer, sources, model, conversation = await resolve(
        client, keys, store, principal, turn_id, conversation_id)
    record = Record(
        turn_id=turn_id, tenant=principal.tenant, subject=principal.subject, rating=rating,
        comment=(comment or "").strip() or None, question=question, answer=answer,
        sources=sources, model=model, conversation_id=conversation, face=face,
        created=time.time(),
    )
    await feedback.save(record)
    return record


# --- the OpenAI-compatible face's endpoint ----------------------------------------------------


class FeedbackBody(BaseModel):
    """``POST /v1/feedback``: ``id`` is the completion's id (``chatcmpl-<turn id>``) or
    ``turn_id`` the turn id from the ``parley`` extension."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, pattern=r"^chatcmpl-[0-9a-f]{32}$")
    turn_id: str | None = Field(default=None, pattern=TURN_ID)
    rating: Rating
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)


def _openai_error(code: str, message: str) -> dict[str, Any]:
    kind = "authentication_error" if code == "unauthenticated" else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


async def post_feedback(
    request: Request,
    principal_of: Any,
    client: aioredis.Redis,
    keys: Keys,
    store: ConversationStore,
    feedback: FeedbackStore,
) -> None:
    """The handler of ``POST /v1/feedback`` (``principal_of``: token -> Principal, raising
    AuthError): 200 ``{"turn_id", "rating"}``; 400, 401 or 404 with an OpenAI-style error."""
    try:
        principal: Principal = await principal_of(bearer(request.headers, {}))
    except AuthError as exc:
        await json_response(request, 401, _openai_error("unauthenticated", exc.message),
                            [("www-authenticate", "Bearer")])
        return
    try:
        body = FeedbackBody.model_validate(json.loads(await request.body(_BODY_LIMIT)))
    except (BodyTooLarge, ValueError, ValidationError) as exc:
        await json_response(request, 400, _openai_error("bad_request", f"bad request body: {exc}"))
        return
    except ClientGone:
        return
    turn_id = body.turn_id or (body.id or "").removeprefix("chatcmpl-")
    if not turn_id:
        await json_response(request, 400, _openai_error(
            "bad_request", "name the answer: 'id' (chatcmpl-...) or 'turn_id'"))
        return
    try:
        record = await rate(client, keys, store, feedback, principal, turn_id=turn_id,
                            rating=body.rating, comment=body.comment, conversation_id=None,
                            face="openai")
    except NotFound as exc:
        await json_response(request, 404, _openai_error("not_found", exc.message))
        return
    await json_response(request, 200, {"turn_id": record.turn_id, "rating": record.rating})
