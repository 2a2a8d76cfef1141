"""The websocket face end to end through a real gateway (uvicorn + websockets), real Redis,
Chroma and embedder, and a stand-in worker on the chat queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat_gateway.services import GatewayOptions
from parley import turnstream
from parley.broker.redis import RedisBroker
from parley.ids import DocumentId, MessageId
from parley.status import Stage
from tests.chat_gateway.conftest import ALPHA, BETA, World, receive_until, ws_url


async def send(ws: Any, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def test_health_and_readiness(world: World) -> None:
    import httpx

    async with world.make_gateway() as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).json()["status"] == "alive"
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"redis": True, "chroma": True}
        assert (await http.get("/nope")).status_code == 404


async def test_bad_header_token_is_refused_with_401(world: World) -> None:
    async with world.make_gateway() as base:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(base), additional_headers={"Authorization": "Bearer nope"}):
                pass
        assert refused.value.response.status_code == 401


async def test_first_message_must_authenticate(world: World) -> None:
    async with world.make_gateway() as base, connect(ws_url(base)) as ws:
        await send(ws, {"type": "ask", "question": "hello"})
        event = json.loads(await ws.recv())
        assert event["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_wrong_auth_message_closes_4401(world: World) -> None:
    async with world.make_gateway() as base, connect(ws_url(base)) as ws:
        await send(ws, {"type": "auth", "token": "guess"})
        assert json.loads(await ws.recv())["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_auth_by_message_header_and_query(world: World) -> None:
    async with world.make_gateway() as base:
        async with connect(ws_url(base)) as ws:
            await send(ws, {"type": "auth", "token": "tok-beta"})
            assert json.loads(await ws.recv()) == {"type": "ready", "tenant": BETA}
        async with connect(ws_url(base), additional_headers={"Authorization": "Bearer tok-alpha"}
                           ) as ws:
            assert json.loads(await ws.recv())["tenant"] == ALPHA
        async with connect(ws_url(base, "tok-alpha")) as ws:
            assert json.loads(await ws.recv())["tenant"] == ALPHA


async def test_malformed_messages_get_typed_errors_and_the_connection_carries_on(
    world: World,
) -> None:
    async with world.make_gateway() as base, connect(ws_url(base, "tok-alpha")) as ws:
        await ws.recv()  # ready
        cases: list[tuple[str | bytes, str]] = [
            ("{not json", "bad_request"),
            ("[1, 2]", "bad_request"),
            (json.dumps({"type": "dance"}), "unknown_type"),
            (json.dumps({"question": "no type"}), "unknown_type"),
            (json.dumps({"type": "ask", "question": ""}), "bad_request"),
            (json.dumps({"type": "ask", "question": "x", "extra": 1}), "bad_request"),
            (json.dumps({"type": "resume", "turn_id": "../etc"}), "bad_request"),
            (json.dumps({"type": "ask", "question": "x" * 20_000}), "too_large"),
            (b"\x00binary", "bad_request"),
        ]
        for raw, code in cases:
            await ws.send(raw)
            event = json.loads(await ws.recv())
            assert (event["type"], event["code"]) == ("error", code), raw
            assert event["message"]
        await send(ws, {"type": "ping"})
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_frame_over_transport_limit_closes_1009(world: World) -> None:
    async with world.make_gateway(GatewayOptions(ws_max_size=64 * 1024)) as base:
        async with connect(ws_url(base, "tok-alpha"), max_size=None) as ws:
            await ws.recv()
            await ws.send("x" * (65 * 1024))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # and the server carries on
        async with connect(ws_url(base, "tok-alpha")) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"


async def test_full_turn_streams_sources_tokens_and_final(world: World) -> None:
    async with world.make_gateway() as base, connect(ws_url(base, "tok-alpha")) as ws:
        await ws.recv()
        await send(ws, {"type": "ask", "question": "What was Orchard's revenue in 2023?"})
        events = await receive_until(ws, {"final", "error"})
    kinds = [e["type"] for e in events]
    assert kinds[0] == "turn" and kinds[1] == "sources" and kinds[-1] == "final", kinds
    assert set(kinds[2:-1]) == {"token"}
    sources = events[1]["sources"]
    assert sources[0]["document"] == "orchard-annual-report.pdf" and sources[0]["page"] == 3
    assert all(s["document"].startswith("orchard") for s in sources)
    final = events[-1]
    text = "".join(e["text"] for e in events if e["type"] == "token")
    assert text == final["text"] == world.worker.answer
    assert [c["n"] for c in final["citations"]] == [1, 2]
    offsets = [e["offset"] for e in events[1:]]
    assert offsets == sorted(offsets, key=lambda o: tuple(map(int, o.split("-"))))
    # The worker got the numbered sources in its prompt.
    [turn] = world.worker.turns
    assert '<source n="1" document="orchard-annual-report.pdf" page="3">' in (
        turn.messages[-1].content)
    assert turn.answer_mode == "extractive"
    assert turn.question == "What was Orchard's revenue in 2023?"
    assert turn.tenant == ALPHA


async def test_extractive_answers_read_every_source_a_model_only_what_fits(
    world: World,
) -> None:
    # A context too small for the five sources of tenant gamma (whole generated reports): the
    # generative turn gets the ones that fit, the extractive one (no model) all of them.
    async with world.make_gateway(chat_context_tokens=900, chat_max_tokens=256) as base, \
            connect(ws_url(base, "tok-gamma")) as ws:
        await ws.recv()
        events = {}
        for mode in ("extractive", "generative"):
            await send(ws, {"type": "ask", "question": "What was revenue in the quarter?",
                            "answer_mode": mode})
            events[mode] = await receive_until(ws, {"final", "error"})
    extractive, generative = world.worker.turns
    assert (extractive.answer_mode, generative.answer_mode) == ("extractive", "generative")
    assert len(extractive.sources) == 5
    assert 1 <= len(generative.sources) < 5
    for mode, turn in (("extractive", extractive), ("generative", generative)):
        [shown] = [e for e in events[mode] if e["type"] == "sources"]
        assert [s["n"] for s in shown["sources"]] == [s.n for s in turn.sources]


async def test_follow_up_uses_the_conversation(world: World) -> None:
    async with world.make_gateway() as base, connect(ws_url(base, "tok-alpha")) as ws:
        await ws.recv()
        await send(ws, {"type": "ask", "question": "What was Orchard's revenue?"})
        first = await receive_until(ws, {"final"})
        conversation = first[0]["conversation_id"]
        await send(ws, {"type": "ask", "question": "And how many staff?",
                        "conversation_id": conversation})
        second = await receive_until(ws, {"final"})
    assert second[0]["conversation_id"] == conversation
    turn = world.worker.turns[-1]
    roles = [m.role for m in turn.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert turn.messages[1].content == "What was Orchard's revenue?"
    assert turn.messages[2].content == world.worker.answer


async def test_a_broker_other_than_redis_gets_the_turn_after_the_pipeline(world: World) -> None:
    """The turn goes in the ask's one pipeline only for a Redis broker (the same Redis); any
    other broker (Service Bus) is published to once the metadata, ``sources`` and question
    are written: the turn streams and the question is kept all the same."""

    class Elsewhere:  # a Broker that is not a RedisBroker
        def __init__(self, inner: RedisBroker) -> None:
            self.inner = inner
            self.published = 0

        async def publish(self, queue: str, body: bytes,
                          headers: Mapping[str, str] | None = None) -> MessageId:
            self.published += 1
            return await self.inner.publish(queue, body, headers)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    brokers: list[Elsewhere] = []

    def elsewhere(client: Any) -> Any:
        brokers.append(Elsewhere(RedisBroker(client, prefix=world.settings.redis_prefix)))
        return brokers[-1]

    async with world.make_gateway(broker=elsewhere) as base, \
            connect(ws_url(base, "tok-alpha")) as ws:
        await ws.recv()
        await send(ws, {"type": "ask", "question": "What was Orchard's revenue?"})
        first = await receive_until(ws, {"final"})
        await send(ws, {"type": "ask", "question": "And how many staff?",
                        "conversation_id": first[0]["conversation_id"]})
        second = await receive_until(ws, {"final"})
    assert [e["type"] for e in first][:2] == ["turn", "sources"]
    assert second[-1]["text"] == world.worker.answer
    assert brokers[0].published == 2
    assert world.worker.turns[-1].messages[1].content == "What was Orchard's revenue?"


async def test_tenant_with_no_documents_gets_no_documents(world: World) -> None:
    async with world.make_gateway() as base, connect(ws_url(base, "tok-empty")) as ws:
        await ws.recv()
        await send(ws, {"type": "ask", "question": "anything?"})
        event = json.loads(await ws.recv())
    assert event["code"] == "no_documents" and "upload" in event["hint"]
    assert world.worker.turns == []


async def test_tenants_never_see_each_others_chunks_or_turns(world: World) -> None:
    async with world.make_gateway() as base:
        async with connect(ws_url(base, "tok-alpha")) as alpha:
            await alpha.recv()
            # Asked about beta's document: alpha still only gets alpha's chunks.
            await send(alpha, {"type": "ask", "question": "Zebra Printing ribbon price"})
            events = await receive_until(alpha, {"final"})
            alpha_turn = events[0]["turn_id"]
        documents = {s["document"] for s in events[1]["sources"]}
        assert documents and all(d.startswith("orchard") for d in documents)
        prompt = world.worker.turns[-1].messages[-1].content
        assert "40 euros" not in prompt and "zebra-pricing" not in prompt
        async with connect(ws_url(base, "tok-beta")) as beta:
            await beta.recv()
            await send(beta, {"type": "resume", "turn_id": alpha_turn, "offset": "0-0"})
            event = json.loads(await beta.recv())
            assert event["code"] == "not_found"
            await send(beta, {"type": "cancel", "turn_id": alpha_turn})
            assert json.loads(await beta.recv())["code"] == "not_found"


async def test_document_events_reach_only_the_tenants_clients(world: World) -> None:
    async with world.make_gateway() as base, connect(ws_url(base, "tok-alpha")) as alpha, \
                connect(ws_url(base, "tok-beta")) as beta:
        await alpha.recv()
        await beta.recv()
        await asyncio.sleep(1.5)  # the hub picks new tenants up within its block time
        await world.status.update(BETA, DocumentId("beta-new"), filename="new.pdf",
                                  stage=Stage.EXTRACTING, pages_done=2, pages_total=9)
        await world.status.update(ALPHA, DocumentId("alpha-new"), filename="a.pdf",
                                  stage=Stage.FAILED, reason="encrypted",
                                  message="encrypted PDF")
        event = json.loads(await asyncio.wait_for(beta.recv(), 5))
        assert event["type"] == "document" and event["document_id"] == "beta-new"
        assert (event["stage"], event["pages_done"], event["pages_total"]) == \
                ("extracting", 2, 9)
        event = json.loads(await asyncio.wait_for(alpha.recv(), 5))
        assert event["document_id"] == "alpha-new" and event["message"] == "encrypted PDF"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(beta.recv(), 1.0)


async def test_rate_limit_is_a_typed_error_with_retry_after(world: World) -> None:
    async with world.make_gateway(GatewayOptions(asks_per_minute=1)) as base, \
            connect(ws_url(base, "tok-alpha")) as ws:
        await ws.recv()
        await send(ws, {"type": "ask", "question": "revenue?"})
        first = await receive_until(ws, {"final"})
        await send(ws, {"type": "ask", "question": "revenue again?"})
        event = json.loads(await ws.recv())
        # A follow-up (its history read while the limit is counted) is refused the same way.
        await send(ws, {"type": "ask", "question": "and staff?",
                        "conversation_id": first[0]["conversation_id"]})
        follow_up = json.loads(await ws.recv())
    assert event["code"] == "rate_limited" and 0 < event["retry_after"] <= 60
    assert follow_up["code"] == "rate_limited"
    assert len(world.worker.turns) == 1


async def test_second_ask_while_streaming_is_busy(world: World) -> None:
    world.worker.delay = 0.05
    async with world.make_gateway() as base, connect(ws_url(base, "tok-alpha")) as ws:
        await ws.recv()
        await send(ws, {"type": "ask", "question": "revenue?"})
        await receive_until(ws, {"token"})
        await send(ws, {"type": "ask", "question": "again?"})
        events = await receive_until(ws, {"error", "final"})
        assert events[-1]["type"] == "error" and events[-1]["code"] == "busy"
        await receive_until(ws, {"final"})


async def test_resume_on_another_replica_has_no_gap_and_no_duplicate(world: World) -> None:
    world.worker.delay = 0.03
    async with world.make_gateway() as first, world.make_gateway() as second:
        ws = await websockets.connect(ws_url(first, "tok-alpha"))
        await ws.recv()
        await send(ws, {"type": "ask", "question": "revenue?"})
        seen = await receive_until(ws, {"token"})
        seen += [json.loads(await ws.recv()) for _ in range(2)]
        turn_id = seen[0]["turn_id"]
        # Drop the connection without a closing handshake (a network loss).
        ws.transport.abort()
        await asyncio.sleep(0.3)  # tokens keep coming while nobody listens
        async with connect(ws_url(second, "tok-alpha")) as again:
            await again.recv()
            await send(again, {"type": "resume", "turn_id": turn_id,
                               "offset": seen[-1]["offset"]})
            rest = await receive_until(again, {"final", "cancelled", "error"})
        async with httpx.AsyncClient(base_url=second) as http:
            kept = (await http.get(f"/api/conversations/{seen[0]['conversation_id']}",
                                   headers={"Authorization": "Bearer tok-alpha"})).json()
    assert rest[0] == {"type": "turn", "turn_id": turn_id, "conversation_id":
                       seen[0]["conversation_id"], "resumed": True}
    assert rest[-1]["type"] == "final"
    # The resumed relay did not send the sources (they were before its offset): the answer is
    # kept with them all the same, read from the turn's stream.
    assert seen[1]["type"] == "sources"
    assert [(m["role"], m["content"]) for m in kept["messages"]] == [
        ("user", "revenue?"), ("assistant", world.worker.answer)]
    assert kept["messages"][1]["sources"] == seen[1]["sources"]
    tokens = [e for e in seen + rest if e["type"] == "token"]
    offsets = [e["offset"] for e in tokens]
    assert len(offsets) == len(set(offsets))
    assert "".join(e["text"] for e in tokens) == rest[-1]["text"] == world.worker.answer
    prefix = world.settings.redis_prefix
    assert not await turnstream.is_cancelled(world.redis, turn_id, prefix=prefix)


async def _slow_turn(world: World, base: str) -> tuple[Any, str]:
    world.worker.delay = 0.05
    world.worker.answer = " ".join(f"w{i}" for i in range(400))  # ~20 s if not stopped
    ws = await websockets.connect(ws_url(base, "tok-alpha"))
    await ws.recv()
    await send(ws, {"type": "ask", "question": "revenue?"})
    events = await receive_until(ws, {"token"})
    return ws, str(events[0]["turn_id"])


async def _assert_stops_within(world: World, turn_id: str, started: float, limit: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(world.worker.wait_ended(turn_id), limit + 1.0)
    assert await turnstream.is_cancelled(world.redis, turn_id, prefix=world.settings.redis_prefix)
    assert world.worker.ended[turn_id] == "cancelled"
    assert world.worker.ended_at[turn_id] - started < limit, loop.time() - started
    assert world.worker.written[turn_id] < 100


async def test_cancel_message_stops_generation_within_a_second(world: World) -> None:
    async with world.make_gateway() as base:
        ws, turn_id = await _slow_turn(world, base)
        started = asyncio.get_running_loop().time()
        await send(ws, {"type": "cancel"})
        events = await receive_until(ws, {"cancelled", "final"})
        assert events[-1]["type"] == "cancelled"
        await _assert_stops_within(world, turn_id, started, 1.0)
        await ws.close()


async def test_clean_close_cancels_within_a_second(world: World) -> None:
    async with world.make_gateway() as base:
        ws, turn_id = await _slow_turn(world, base)
        started = asyncio.get_running_loop().time()
        await ws.close(1000)
        await _assert_stops_within(world, turn_id, started, 1.0)


async def test_dropped_client_not_resuming_is_cancelled_after_the_grace(world: World) -> None:
    async with world.make_gateway(GatewayOptions(resume_grace=0.5)) as base:
        ws, turn_id = await _slow_turn(world, base)
        started = asyncio.get_running_loop().time()
        ws.transport.abort()
        await _assert_stops_within(world, turn_id, started, 0.5 + 1.0)


async def test_gateway_opens_its_own_services_from_settings(world: World) -> None:
    """The production path: lifespan startup builds Redis, broker, embedder and Chroma from
    the settings alone."""
    import httpx

    from chat_gateway.app import Gateway
    from chat_gateway.server import running

    gateway = Gateway(world.settings)
    async with running(gateway) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/readyz")).status_code == 200
        async with connect(ws_url(base, "tok-alpha")) as ws:
            await ws.recv()
            await send(ws, {"type": "ask", "question": "What was Orchard's revenue?"})
            events = await receive_until(ws, {"final", "error"})
    assert events[-1]["type"] == "final", events[-1]
