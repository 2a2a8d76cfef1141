"""The gateway's websocket transport (chat_gateway/websocket.py): its lean receive channel and
write gate behave as the asyncio queue and event they replace, the handshake's headers are read
before the accept and let go of after it, keepalive still closes a peer that stopped answering,
and the compression setting is honoured. Through real uvicorn servers and real clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from chat_gateway.websocket import Gate, Inbox, WebSocketProtocol
from tests.chat_gateway.conftest import ALPHA, World, ws_url

# --- Inbox ----------------------------------------------------------------------------------


async def test_inbox_is_first_in_first_out_and_wakes_a_waiting_getter() -> None:
    inbox = Inbox()
    assert inbox.empty()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.put_nowait({"type": "websocket.connect"})
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    assert await waiting == {"type": "websocket.connect"}
    assert inbox.qsize() == 1
    assert await inbox.get() == {"type": "websocket.disconnect", "code": 1000}
    assert inbox.empty()


async def test_inbox_gives_each_waiting_getter_its_own_item() -> None:
    inbox = Inbox()
    getters = [asyncio.create_task(inbox.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for code in (1, 2, 3):
        inbox.put_nowait({"type": "websocket.disconnect", "code": code})
    got = await asyncio.gather(*getters)
    assert sorted(int(m["code"]) for m in got) == [1, 2, 3]


async def test_inbox_loses_no_item_when_a_woken_getter_is_cancelled() -> None:
    inbox = Inbox()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait({"type": "websocket.connect"})  # wakes the first getter...
    first.cancel()  # ...which is cancelled before it runs: the second must get the item
    assert await asyncio.wait_for(second, 1) == {"type": "websocket.connect"}
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_inbox_get_times_out_cleanly_and_works_after() -> None:
    inbox = Inbox()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(inbox.get(), 0.01)
    inbox.put_nowait({"type": "websocket.connect"})
    assert await inbox.get() == {"type": "websocket.connect"}


# --- Gate -----------------------------------------------------------------------------------


async def test_gate_waits_only_while_closed() -> None:
    gate = Gate()
    assert gate.is_set() and await gate.wait()
    gate.clear()
    waiters = [asyncio.create_task(gate.wait()) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    gate.set()
    assert await asyncio.gather(*waiters) == [True, True]


async def test_gate_forgets_a_cancelled_waiter() -> None:
    gate = Gate(is_open=False)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(gate.wait(), 0.01)
    gate.set()
    assert await asyncio.wait_for(gate.wait(), 1)


# --- the protocol under uvicorn -------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[str]:
    """``app`` under uvicorn with the gateway's websocket protocol; yields ``ws://host:port``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, ws=WebSocketProtocol, lifespan="off",
                                           log_level="warning", **options))
    server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_headers_are_read_before_the_accept_and_let_go_of_after() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        before = dict(scope["headers"]).get(b"x-probe", b"").decode()
        await send({"type": "websocket.accept"})
        after = len(scope["headers"])
        await send({"type": "websocket.send", "text": json.dumps([before, after])})
        message = await receive()  # the channel still works after the accept
        await send({"type": "websocket.send", "text": message.get("text", "")})
        await receive()

    async with serving(app) as url, connect(url, additional_headers={"X-Probe": "seen"}) as ws:
        assert json.loads(await ws.recv()) == ["seen", 0]
        await ws.send("echo")
        assert await ws.recv() == "echo"


def handshake(port: int, token: str) -> bytes:
    return (f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()


async def test_keepalive_closes_a_client_that_stopped_answering_and_keeps_one_that_answers(
    world: World,
) -> None:
    server = {"ws_ping_interval": 0.2, "ws_ping_timeout": 0.3}
    async with world.make_gateway(server=server) as base:
        port = int(base.rsplit(":", 1)[1])
        # A client that completes the handshake and then never answers a ping (a dead peer
        # behind a NAT that still accepts bytes): a raw socket, since websockets' client
        # answers pings by itself.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(handshake(port, "tok-alpha"))
        async with connect(ws_url(base, "tok-alpha")) as alive:
            assert json.loads(await alive.recv())["tenant"] == ALPHA
            received = await asyncio.wait_for(reader.read(), 5)  # until the server closes
            # The 101, the ready event, pings, then a close frame with 1011.
            assert received.startswith(b"HTTP/1.1 101")
            close = received.rfind(b"\x88")
            assert close > 0, received
            assert struct.unpack("!H", received[close + 2:close + 4])[0] == 1011
            # The client that answers pings is still served after several ping rounds.
            await asyncio.sleep(1.0)
            await alive.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(alive.recv(), 5))["type"] == "pong"
        writer.close()


@pytest.mark.parametrize("on", [False, True])
async def test_compression_is_negotiated_only_when_the_setting_is_on(world: World, on: bool
                                                                     ) -> None:
    async with world.make_gateway(ws_compression=on) as base, connect(
        ws_url(base, "tok-alpha"), compression="deflate"
    ) as ws:
        assert json.loads(await ws.recv())["tenant"] == ALPHA
        assert ws.response is not None
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
        assert ("permessage-deflate" in extensions) is on
