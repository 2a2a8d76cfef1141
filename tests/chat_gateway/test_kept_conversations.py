"""Kept conversations and feedback through a real gateway (uvicorn, websockets, httpx), real
Redis, Chroma and embedder, and the stand-in worker: the list and transcript over HTTP, from
another gateway after the first one stopped, rename and delete, other tenants kept out; ratings
over the websocket and the OpenAI face's ``POST /v1/feedback``, stored with question, answer and
sources, counted in the metric."""

from __future__ import annotations

import json
from typing import Any

import httpx
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect

from chat_gateway.feedback import FeedbackStore, eval_line
from tests.chat_gateway.conftest import ALPHA, World, receive_until, ws_url

ALPHA_AUTH = {"Authorization": "Bearer tok-alpha"}
BETA_AUTH = {"Authorization": "Bearer tok-beta"}


async def ask(base: str, question: str, conversation_id: str | None = None) -> dict[str, Any]:
    """Ask over the websocket; the ``turn`` and ``final`` events."""
    async with connect(ws_url(base, "tok-alpha")) as ws:
        await ws.recv()  # ready
        message: dict[str, Any] = {"type": "ask", "question": question}
        if conversation_id:
            message["conversation_id"] = conversation_id
        await ws.send(json.dumps(message))
        events = await receive_until(ws, {"final", "error"})
    turn = next(e for e in events if e["type"] == "turn")
    assert events[-1]["type"] == "final", events[-1]
    return {"turn": turn, "final": events[-1]}


def counted(rating: str, face: str) -> float:
    return REGISTRY.get_sample_value("parley_feedback_total",
                                     {"rating": rating, "face": face}) or 0.0


async def test_conversations_are_kept_listed_renamed_and_deleted(world: World) -> None:
    async with world.make_gateway() as base:
        first = await ask(base, "What was Orchard's revenue?")
        cid = first["turn"]["conversation_id"]
        await ask(base, "And the staff?", cid)
        other = await ask(base, "Where are devices assembled?")
    # Another replica, started after the first stopped: everything is still there.
    async with world.make_gateway() as base, httpx.AsyncClient(base_url=base) as http:
        listed = (await http.get("/api/conversations", headers=ALPHA_AUTH)).json()
        assert [c["id"] for c in listed["conversations"]] == [
            other["turn"]["conversation_id"], cid]
        assert listed["conversations"][1]["title"] == "What was Orchard's revenue?"
        assert listed["conversations"][1]["turns"] == 2
        assert listed["retention_seconds"] == world.settings.conversation_ttl_seconds

        opened = (await http.get(f"/api/conversations/{cid}", headers=ALPHA_AUTH)).json()
        assert [(m["role"], m["content"]) for m in opened["messages"]] == [
            ("user", "What was Orchard's revenue?"), ("assistant", first["final"]["text"]),
            ("user", "And the staff?"), ("assistant", first["final"]["text"])]
        answer = opened["messages"][1]
        assert answer["turn_id"] == first["turn"]["turn_id"]
        assert answer["sources"] and answer["sources"][0]["document"].startswith("orchard")
        assert answer["citations"] == first["final"]["citations"]

        # Another tenant neither lists nor opens, renames or deletes it.
        assert (await http.get("/api/conversations", headers=BETA_AUTH)).json()[
            "conversations"] == []
        for method in ("GET", "DELETE"):
            response = await http.request(method, f"/api/conversations/{cid}", headers=BETA_AUTH)
            assert response.status_code == 404
        assert (await http.patch(f"/api/conversations/{cid}", headers=BETA_AUTH,
                                 json={"title": "x"})).status_code == 404
        assert (await http.get("/api/conversations")).status_code == 401

        renamed = await http.patch(f"/api/conversations/{cid}", headers=ALPHA_AUTH,
                                   json={"title": "Revenue and staff"})
        assert renamed.status_code == 200 and renamed.json()["title"] == "Revenue and staff"
        assert (await http.patch(f"/api/conversations/{cid}", headers=ALPHA_AUTH,
                                 json={"title": ""})).status_code == 400
        deleted = await http.delete(f"/api/conversations/{cid}", headers=ALPHA_AUTH)
        assert deleted.status_code == 204
        assert (await http.get(f"/api/conversations/{cid}", headers=ALPHA_AUTH)
                ).status_code == 404
        assert [c["id"] for c in (await http.get("/api/conversations", headers=ALPHA_AUTH)
                                  ).json()["conversations"]] == [other["turn"]["conversation_id"]]


async def test_questions_are_kept_after_redis_lost_its_scripts(world: World) -> None:
    """The question is recorded in the ask's one pipeline by ``EVALSHA``; after Redis lost its
    scripts (a restart, ``SCRIPT FLUSH``) it is recorded all the same, in the transcript and
    in the prompt's history."""
    async with world.make_gateway() as base:
        first = await ask(base, "What was Orchard's revenue?")
        cid = first["turn"]["conversation_id"]
        await world.redis.script_flush()
        second = await ask(base, "And the staff?", cid)
        async with httpx.AsyncClient(base_url=base) as http:
            opened = (await http.get(f"/api/conversations/{cid}", headers=ALPHA_AUTH)).json()
    assert [(m["role"], m["turn_id"]) for m in opened["messages"]] == [
        ("user", first["turn"]["turn_id"]), ("assistant", first["turn"]["turn_id"]),
        ("user", second["turn"]["turn_id"]), ("assistant", second["turn"]["turn_id"])]
    assert opened["messages"][2]["content"] == "And the staff?"
    await world.redis.script_flush()
    async with world.make_gateway() as base:
        third = await ask(base, "And the year before?", cid)
    turn = next(t for t in world.worker.turns if t.turn_id == third["turn"]["turn_id"])
    assert [m.content for m in turn.messages if m.role == "user"][:2] == [
        "What was Orchard's revenue?", "And the staff?"]


async def test_feedback_over_the_websocket_and_the_openai_face(world: World) -> None:
    async with world.make_gateway() as base, httpx.AsyncClient(base_url=base) as http:
        asked = await ask(base, "What was Orchard's revenue?")
        turn_id = asked["turn"]["turn_id"]
        before = counted("down", "websocket")
        async with connect(ws_url(base, "tok-alpha")) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "feedback", "turn_id": turn_id, "rating": "up"}))
            assert json.loads(await ws.recv())["rating"] == "up"
            # A second rating replaces the first.
            await ws.send(json.dumps({"type": "feedback", "turn_id": turn_id, "rating": "down",
                                      "comment": "the figure is for 2023, I asked about 2024"}))
            ack = json.loads(await ws.recv())
            assert ack == {"type": "feedback", "turn_id": turn_id, "rating": "down",
                           "comment": "the figure is for 2023, I asked about 2024"}
            await ws.send(json.dumps({"type": "feedback", "turn_id": "0" * 32,
                                      "rating": "up"}))
            assert json.loads(await ws.recv())["code"] == "not_found"
            await ws.send(json.dumps({"type": "feedback", "turn_id": turn_id,
                                      "rating": "meh"}))
            assert json.loads(await ws.recv())["code"] == "bad_request"
        async with connect(ws_url(base, "tok-beta")) as ws:  # another tenant's answer
            await ws.recv()
            await ws.send(json.dumps({"type": "feedback", "turn_id": turn_id, "rating": "up"}))
            assert json.loads(await ws.recv())["code"] == "not_found"
        assert counted("down", "websocket") == before + 1

        completion = await http.post("/v1/chat/completions", headers=ALPHA_AUTH, json={
            "model": "x", "messages": [{"role": "user", "content": "How many staff?"}]})
        assert completion.status_code == 200, completion.text
        rated = await http.post("/v1/feedback", headers=ALPHA_AUTH, json={
            "id": completion.json()["id"], "rating": "up"})
        assert rated.status_code == 200, rated.text
        assert (await http.post("/v1/feedback", headers=BETA_AUTH, json={
            "id": completion.json()["id"], "rating": "up"})).status_code == 404
        assert (await http.post("/v1/feedback", json={
            "id": completion.json()["id"], "rating": "up"})).status_code == 401
        assert (await http.post("/v1/feedback", headers=ALPHA_AUTH, json={
            "rating": "up"})).status_code == 400

        cid = asked["turn"]["conversation_id"]
        opened = (await http.get(f"/api/conversations/{cid}", headers=ALPHA_AUTH)).json()
        assert opened["ratings"] == {turn_id: "down"}

    records = await FeedbackStore(world.redis, keys=world.settings.keys).all(ALPHA)
    assert [(r.rating, r.face) for r in records] == [("down", "websocket"), ("up", "openai")]
    websocket, openai = (eval_line(r) for r in records)
    assert websocket["question"] == "What was Orchard's revenue?"
    assert websocket["answer"] == asked["final"]["text"]
    assert websocket["reference"] is None
    assert websocket["comment"] == "the figure is for 2023, I asked about 2024"
    assert websocket["sources"][0]["document"].startswith("orchard")
    assert websocket["sources"][0]["text"]
    assert openai["question"] == "How many staff?"
    assert openai["answer"] == completion.json()["choices"][0]["message"]["content"]
