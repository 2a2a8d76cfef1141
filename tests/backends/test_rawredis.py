"""A connection of its own with commands packed by hiredis: replies in order, as Redis sends
them; an error reply raises and the next call runs on a fresh connection."""

from __future__ import annotations

import uuid

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from backends.rawredis import OwnConnection, bulk, command


async def test_pipelined_replies_in_order_and_an_error_drops_the_connection(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    own = OwnConnection(client)
    key = f"raw:{uuid.uuid4().hex}"
    entry, expired, values = await own.run([
        ("XADD", key, "MAXLEN", "~", 100, "*", "k", "token", "d", '{"text":"é"}'),
        ("EXPIRE", key, 60),
        ("MGET", key + ":a", key + ":b"),
    ])
    assert isinstance(entry, bytes) and entry.count(b"-") == 1
    assert expired == 1 and values == [None, None]
    with pytest.raises(ResponseError):
        await own.run([("INCR", key), ("ECHO", "stale")])  # WRONGTYPE: the key is a stream
    # The failed call's connection, with the ECHO's reply unread, was dropped: the next call's
    # replies are its own.
    assert await own.run([("GET", key + ":none")]) == [None]
    [entries] = await own.run([("XRANGE", key, "-", "+")])
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[fields.index(b"d") + 1].decode() == '{"text":"é"}'
    await own.close()
    await client.aclose()


def test_a_command_packed_from_bulk_pieces_is_what_hiredis_packs() -> None:
    args = ("XREAD", "COUNT", 128, "BLOCK", 4000, "STREAMS", "p:turn:é", "p:wake", "0-0", "$")
    assert command(*map(bulk, args)) == hiredis.pack_command(args)  # type: ignore[arg-type]
