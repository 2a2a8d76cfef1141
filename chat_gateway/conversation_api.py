"""The HTTP routes of kept conversations and of feedback through the OpenAI-compatible face,
authenticated like the documents API (bearer token; the tenant and the subject come from it).
Each route is one small handler function taking the request and the principal.

- ``GET /api/conversations``: the caller's conversations, most recent first, and the retention.
- ``GET /api/conversations/{id}``: one conversation with its transcript and the caller's ratings.
- ``PATCH /api/conversations/{id}`` ``{"title"}``: rename it.
- ``DELETE /api/conversations/{id}``: forget it (204).
- ``POST /v1/feedback``: rate an answer of the OpenAI-compatible face (chat_gateway/feedback.py).

Errors are ``{"error": {"code", "message", "hint"?}}``; a conversation of another user is 404,
like one that never existed."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.routing import BaseRoute

from chat_gateway import feedback
from chat_gateway.auth import AuthError, Principal, bearer
from chat_gateway.services import Host
from chat_gateway.web import BodyTooLarge, ClientGone, Request, json_response, respond, route

CONVERSATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BODY_LIMIT = 16 * 1024

Handler = Callable[[Host, Request, Principal], Awaitable[None]]


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)


async def _error(request: Request, status: int, code: str, message: str,
                 hint: str | None = None) -> None:
    body: dict[str, Any] = {"code": code, "message": message}
    if hint:
        body["hint"] = hint
    await json_response(request, status, {"error": body})


async def _not_found(request: Request) -> None:
    await _error(request, 404, "not_found", "no such conversation",
                 "it may have been deleted, or expired after the retention")


def _conversation_id(request: Request) -> str | None:
    rest = str(request.path_params.get("id", ""))
    return rest if CONVERSATION_ID.match(rest) else None


async def list_conversations(gateway: Host, request: Request, principal: Principal) -> None:
    store = gateway.services.transcripts
    found = await store.list(principal.tenant, principal.subject)
    await json_response(request, 200, {
        "conversations": [s.json() for s in found],
        "retention_seconds": store.retention,
    })


async def open_conversation(gateway: Host, request: Request, principal: Principal) -> None:
    cid = _conversation_id(request)
    transcript = None if cid is None else await gateway.services.transcripts.open(
        principal.tenant, principal.subject, cid)
    if transcript is None:
        await _not_found(request)
        return
    turn_ids = [str(m["turn_id"]) for m in transcript.messages if m.get("role") == "assistant"]
    ratings = await gateway.services.feedback.ratings(turn_ids)
    await json_response(request, 200, {**transcript.summary.json(),
                                       "messages": list(transcript.messages),
                                       "ratings": ratings})


async def rename_conversation(gateway: Host, request: Request, principal: Principal) -> None:
    cid = _conversation_id(request)
    try:
        body = RenameBody.model_validate(json.loads(await request.body(_BODY_LIMIT)))
    except (BodyTooLarge, ValueError, ValidationError) as exc:
        await _error(request, 400, "bad_request", f"bad request body: {exc}",
                     'send {"title": "..."} (1 to 200 characters)')
        return
    summary = None if cid is None else await gateway.services.transcripts.rename(
        principal.tenant, principal.subject, cid, body.title)
    if summary is None:
        await _not_found(request)
        return
    await json_response(request, 200, summary.json())


async def delete_conversation(gateway: Host, request: Request, principal: Principal) -> None:
    cid = _conversation_id(request)
    if cid is None or not await gateway.services.transcripts.delete(
            principal.tenant, principal.subject, cid):
        await _not_found(request)
        return
    await respond(request, 204, b"", "application/json")


def authed(gateway: Host, handler: Handler) -> Callable[[Request], Awaitable[None]]:
    async def handle(request: Request) -> None:
        try:
            principal = await gateway.services.auth.authenticate(
                bearer(request.headers, {}))
        except AuthError as exc:
            await json_response(request, 401, {"error": {
                "code": "unauthenticated", "message": exc.message, "hint": exc.hint}},
                [("www-authenticate", "Bearer")])
            return
        try:
            await handler(gateway, request, principal)
        except ClientGone:
            return

    return handle


def routes(gateway: Host) -> list[BaseRoute]:
    async def rate(request: Request) -> None:
        services = gateway.services
        await feedback.post_feedback(request, services.auth.authenticate, services.redis,
                                     gateway.settings.keys, services.transcripts, services.feedback)

    return [
        route("/api/conversations", GET=authed(gateway, list_conversations)),
        # {id:path}: any sub-path reaches the handler (after authentication), which answers 404
        # unless it is a conversation id.
        route("/api/conversations/{id:path}", GET=authed(gateway, open_conversation),
              PATCH=authed(gateway, rename_conversation),
              DELETE=authed(gateway, delete_conversation)),
        route("/v1/feedback", POST=rate),
    ]
