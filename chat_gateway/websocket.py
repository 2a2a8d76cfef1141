"""The gateway's websocket transport: uvicorn's ``websockets-sansio`` protocol (the ``websockets``
library's Sans-I/O ``ServerProtocol`` under uvicorn) with less kept per idle connection.

What an idle session held in uvicorn's protocol, measured with tracemalloc
(``python -m bench sessions --trace``), and what this class keeps instead:

- an ``asyncio.Queue`` for the ASGI ``receive`` channel (three ``collections.deque`` and an
  ``asyncio.Event`` with a fourth, about 3 KiB together, since a deque allocates a 64-slot block
  at once): :class:`Inbox`, a list and the futures of the tasks waiting on it, created when one
  waits;
- an ``asyncio.Event`` for "the transport may be written to" (another deque): :class:`Gate`;
- the handshake's request and response headers (a ``Headers`` of each, with their strings,
  ~2.5 KiB) and the scope's copy of the request headers (~1 KiB), kept for the life of the
  connection although nothing reads them after the handshake: emptied once the session is
  accepted. The ASGI app must read the headers it needs before it sends ``websocket.accept``
  (the gateway's session authenticates before accepting).

Everything else (framing, keepalive pings with their timeout, close handshake, back-pressure)
is uvicorn's and the library's, unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

Event = Any  # an ASGI event (uvicorn types them in a private module)


class Inbox:
    """A FIFO of ASGI events with one producer (the protocol's callbacks) and any number of
    consumers, the subset of ``asyncio.Queue`` that uvicorn's protocol uses (``put_nowait``,
    ``get``, ``empty``), holding nothing but a list while nobody waits."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Event] = []
        self._getters: list[asyncio.Future[None]] | None = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Event) -> None:
        self._items.append(item)
        self._wake_one()

    async def get(self) -> Event:
        while not self._items:
            if self._getters is None:
                self._getters = []
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                self._forget(getter)
                # Woken and cancelled at once: pass the wake-up on, or an item waits unseen.
                if getter.done() and not getter.cancelled() and self._items:
                    self._wake_one()
                raise
            self._forget(getter)
        return self._items.pop(0)

    def _wake_one(self) -> None:
        for getter in self._getters or ():
            if not getter.done():
                getter.set_result(None)
                return

    def _forget(self, getter: asyncio.Future[None]) -> None:
        if self._getters is not None:
            if getter in self._getters:
                self._getters.remove(getter)
            if not self._getters:
                self._getters = None


class Gate:
    """An ``asyncio.Event`` (``set``, ``clear``, ``is_set``, ``wait``) that allocates its
    waiters' list only when someone waits on it closed: the transport is writable almost
    always."""

    __slots__ = ("_open", "_waiters")

    def __init__(self, is_open: bool = True) -> None:
        self._open = is_open
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        if self._open:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None
        return True


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's Sans-I/O websocket protocol with the lean receive channel and write gate
    above, and the handshake's headers let go of once the connection is accepted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue: Any = Inbox()
        self.writable: Any = Gate()

    async def send(self, message: Event) -> None:
        accepting = not self.handshake_complete and message["type"] == "websocket.accept"
        await super().send(message)
        if accepting and self.handshake_complete:
            self._forget_handshake()

    def _forget_handshake(self) -> None:
        # The library's parser keeps the request (a local of its generator) and uvicorn keeps
        # request, response and scope for the life of the connection: empty what they hold.
        request = getattr(self, "request", None)
        if request is not None:
            request.headers.clear()
        response = getattr(self, "response", None)
        if response is not None:
            response.headers.clear()
        scope: Any = getattr(self, "scope", None)
        if scope is not None:
            scope["headers"] = []
