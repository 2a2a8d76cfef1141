"""A Redis connection of its own for a loop that sends the same few commands all the time (the
gateway's relay read, the inference worker's outbox flush): the commands are packed by hiredis
in C and their replies read raw, with none of redis-py's per-command work.

Why: redis-py packs a command an argument at a time in Python (an encoder call, type checks) and
takes a pool connection, records metrics attributes and applies a reply callback per command.
For the relay's ``XREAD`` over 200 streams that was ~1 ms of CPU per read, 3.5x the whole raw
read; for the outbox's pipeline of one ``XADD`` per turn, 34 us per ``XADD`` against 14 raw
(measured on 2 cores; figures in ARCHITECTURE.md, "The token path, measured").

Replies are as Redis sends them (RESP2 lists, or RESP3 maps where the URL asks for protocol 3):
an ``XADD`` gives the entry id as bytes, an ``XREAD`` ``[[key, [[id, [field, value, ...]],
...]], ...]``. After any error (a broken link, an error reply, a cancelled read) the connection
is dropped and the next call takes a fresh one from the client's pool; unlike redis-py's command
path, a command is not sent again after a broken link (the caller's own failure handling
applies: the relay reads again, the outbox fails the turns of that flush).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

Command = tuple[str | bytes | int | float, ...]


def bulk(value: str | bytes | int) -> bytes:
    """One argument of a command in RESP (a bulk string), as ``hiredis.pack_command`` writes
    it: pieces of a command that a caller sends again and again can be packed once."""
    raw = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def command(*args: bytes) -> bytes:
    """A command in RESP from its arguments packed by :func:`bulk`."""
    return b"*%d\r\n%s" % (len(args), b"".join(args))


class OwnConnection:
    """One connection taken from ``client``'s pool on first use and kept; not for use by
    several tasks at once."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._pool = client.connection_pool
        self._conn: AbstractConnection | None = None

    async def run(self, commands: Sequence[Command], *, timeout: float | None = None) -> list[Any]:
        """Send ``commands`` in one write (pipelined) and return their replies in order. A
        command's error reply raises (as redis-py's :class:`redis.exceptions.ResponseError`),
        as does a reply later than ``timeout`` seconds (None: the pool's socket timeout)."""
        # (hiredis's stub types its argument as a one-element tuple)
        packed = b"".join([hiredis.pack_command(command)  # type: ignore[arg-type]
                           for command in commands])
        return await self.run_packed(packed, len(commands), timeout=timeout)

    async def run_packed(self, packed: bytes, replies: int, *,
                         timeout: float | None = None) -> list[Any]:
        """As :meth:`run`, for commands already packed in RESP (``replies`` of them), e.g. by
        :func:`bulk` from pieces a caller keeps from one call to the next."""
        if self._conn is None:
            self._conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        conn = self._conn
        try:
            # A PING first when the pool's health_check_interval has passed since the last
            # command (an idle worker's link may have been closed by Redis or a proxy).
            await conn.send_packed_command(packed, check_health=True)
            return [await conn.read_response(timeout=timeout) for _ in range(replies)]
        except BaseException:
            # Replies may still be due (an error reply, a cancel) or the link is broken.
            self._conn = None
            await self._drop(conn)
            raise

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._drop(conn)

    async def _drop(self, conn: AbstractConnection) -> None:
        with contextlib.suppress(Exception):
            await conn.disconnect()
        with contextlib.suppress(Exception):
            await self._pool.release(conn)
