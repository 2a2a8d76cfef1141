"""Conversation-aware retrieval: the rule (pure), then whole conversations through a real
gateway, Redis, the Chroma server and the real embedder over look-alike reports of several
companies and a travel policy: a follow-up finds its topic's document, a new topic is not
pulled back to the previous one. Also the bad input a user can type."""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import connect

from chat_gateway.followup import is_follow_up, resolve
from parley.contracts import ChatMessage
from tests.chat_gateway.conftest import World, receive_until, ws_url

KESTREL = "What were Kestrel Avionics' net sales in Q1 2024?"


def history(*questions: str) -> list[ChatMessage]:
    out = []
    for q in questions:
        out += [ChatMessage(role="user", content=q),
                ChatMessage(role="assistant", content="An answer [1].")]
    return out


def test_a_follow_up_takes_the_subject_of_its_topic() -> None:
    resolved = resolve("and its margins?", history(KESTREL))
    assert resolved.follow_up and resolved.query == "and its margins? (Kestrel Avionics Q1 2024)"
    # A chain keeps the subject of the question that started the topic.
    assert "Kestrel Avionics" in resolve("and the year before?",
                                         history(KESTREL, "and its margins?")).query
    # What the follow-up names itself replaces what it would inherit.
    assert resolve("What about Q3 2024?", history(KESTREL)).subject == (
        "Kestrel Avionics net sales")
    assert resolve("And Norrland?", history(KESTREL)).subject == "Q1 2024 net sales"
    assert resolve("How many employees does it have?",
                   history("What is in onboarding.docx?")).subject == "onboarding.docx"
    # A fragment answering the assistant's question continues the topic.
    assert resolve("Orchard, in 2023", history("What was the revenue?")).query == (
        "Orchard, in 2023 (revenue)")
    assert resolve("Norrland Timber?", history(KESTREL)).subject == "Q1 2024 net sales"


def test_a_new_topic_is_searched_alone() -> None:
    question = "What does the travel policy say about hotel rooms?"
    assert resolve(question, history(KESTREL)) == resolve(question, [])
    assert resolve(question, []).query == question and not is_follow_up(question)
    assert not is_follow_up("How many employees did Norrland Timber have in March 2024?")
    assert not is_follow_up("Summarize onboarding.docx")
    assert resolve("and its margins?", []).query == "and its margins?"  # nothing to follow


async def ask(ws: Any, question: str, conversation: str | None) -> list[dict[str, Any]]:
    message: dict[str, Any] = {"type": "ask", "question": question}
    if conversation:
        message["conversation_id"] = conversation
    await ws.send(json.dumps(message))
    return await receive_until(ws, {"final", "error"}, timeout=30)


async def test_a_conversation_follows_its_topic_and_changes_topic(world: World) -> None:
    async with world.make_gateway() as base, connect(ws_url(base, "tok-gamma")) as ws:
        await ws.recv()
        first = await ask(ws, KESTREL, None)
        conversation = first[0]["conversation_id"]
        follow = await ask(ws, "and how much did it spend on research and development?",
                           conversation)
        policy = await ask(ws, "What does the travel policy say about hotel rooms?",
                           conversation)
        flights = await ask(ws, "and flights?", conversation)
        alone = await ask(ws, "and how much did it spend on research and development?", None)

    def top(events: list[dict[str, Any]]) -> str:
        sources = next(e for e in events if e["type"] == "sources")["sources"]
        return str(sources[0]["document"])

    assert top(first) == "kestrel-q1-2024.pdf"
    assert top(follow) == "kestrel-q1-2024.pdf"  # "it" is Kestrel, from the conversation
    assert top(policy) == "travel-policy.docx"  # a new topic, not pulled back to Kestrel
    assert top(flights) == "travel-policy.docx"
    questions = {t.turn_id: t.question for t in world.worker.turns}
    assert questions[follow[0]["turn_id"]] == (
        "and how much did it spend on research and development? (Kestrel Avionics Q1 2024)")
    assert questions[policy[0]["turn_id"]] == "What does the travel policy say about hotel rooms?"
    # The same follow-up asked alone has no subject: it is searched as it is.
    assert questions[alone[0]["turn_id"]] == (
        "and how much did it spend on research and development?")


async def test_bad_input_gets_a_clear_message(world: World) -> None:
    async with world.make_gateway() as base, connect(ws_url(base, "tok-gamma")) as ws:
        await ws.recv()
        for question, code in (("", "bad_request"), ("   \n\t ", "bad_request"),
                               ("x" * 16 * 1024, "too_large")):
            events = await ask(ws, question, None)
            assert [e["type"] for e in events] == ["error"], question[:20]
            assert events[0]["code"] == code and events[0]["message"]
        # A question in another language is searched and answered like any other.
        events = await ask(ws, "Wie hoch war der Umsatz von Kestrel Avionics im Jahr 2024?",
                           None)
        assert events[-1]["type"] == "final"
    async with world.make_gateway() as base, connect(ws_url(base, "tok-empty")) as ws:
        await ws.recv()
        [event] = await ask(ws, "What were the net sales?", None)
        assert event["code"] == "no_documents" and "upload" in event["hint"]
