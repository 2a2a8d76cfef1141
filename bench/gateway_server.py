"""A chat gateway process for the benches (``bench/relay.py``, ``bench/sessions.py``,
``bench/ttft.py``).

    python bench/gateway_server.py --redis-url URL --prefix P --port N [--ws IMPL] [--deflate]
        [--documents N] [--words N]

``--ws``: ``parley`` (what the gateway ships: ``chat_gateway.websocket``), ``websockets-sansio``
(uvicorn's protocol it is derived from), ``websockets`` (uvicorn's legacy protocol of the same
library) or ``raw`` (``websockets.asyncio.server.serve`` with a handler that
only checks the token and waits: the floor for memory per connection). The embedder and vector
store are inert stand-ins (``--documents``: the chunks every retrieval returns). Prints READY
when serving."""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis
from pydantic import SecretStr

from chat_gateway.app import Gateway
from chat_gateway.server import WS_IMPLEMENTATION, config
from chat_gateway.services import GatewayOptions, Services
from parley.broker.redis import RedisBroker
from parley.ids import ChunkId, DocumentId
from parley.settings import Settings
from parley.status import StatusStore
from parley.vectors.store import Hit

TOKEN = "bench-token"
TENANT = "bench"


class Inert:
    """Stands in for the embedder and the vector store (the benches measure the gateway's
    plumbing, not retrieval). ``hits``: the chunks every query returns (none: every ask ends
    with ``no_documents``)."""

    model_id = "inert"
    dimensions = 1
    max_tokens = 1
    tokenizer = None

    def __init__(self, hits: Sequence[Hit] = ()) -> None:
        self.hits = list(hits)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[0.0] for _ in texts]

    async def query(
        self, tenant: str, embedding: Sequence[float], *, k: int,
        documents: Collection[str] | None = None,
    ) -> list[Hit]:
        return self.hits[:k]

    async def close(self) -> None:
        pass


def raise_fd_limit(want: int = 0) -> int:
    """Raise the soft open-file limit to the hard one, and the hard one to ``want`` where this
    process may (root, CAP_SYS_RESOURCE); returns the limit in effect."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def serve_raw(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        if ws.request is None or f"token={TOKEN}" not in ws.request.path:
            await ws.close(4401)
            return
        await ws.send('{"type":"ready"}')
        await ws.wait_closed()

    # open_timeout: a loaded machine takes more than the default 10 s to answer 20k handshakes.
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**20, open_timeout=120,
                     backlog=4096):
        print("READY", flush=True)
        await asyncio.Future()


async def serve_gateway(args: argparse.Namespace) -> None:
    import uvicorn

    # Generative: every answer streams from the model (the bench's upstream).
    settings = Settings(redis_url=args.redis_url, redis_prefix=args.prefix,
                        answer_mode="generative", local_tokens=SecretStr(f"{TOKEN}:{TENANT}"),
                        ws_compression=args.deflate)
    extra: dict[str, Any] = {}
    if args.parser == "python":
        from redis._parsers import _AsyncRESP3Parser

        extra["parser_class"] = _AsyncRESP3Parser
    pool = aioredis.BlockingConnectionPool.from_url(args.redis_url, max_connections=256,
                                                    timeout=10, **extra)
    client = aioredis.Redis(connection_pool=pool)
    hits = [Hit(chunk_id=ChunkId(f"bench-{i}"), document_id=DocumentId("bench-doc"),
                version="v1",
                text=f"Revenue rose {i} percent in the third quarter. {filler(i, args.words)}",
                score=0.9 - i / 100, metadata={"filename": "bench.pdf", "page": i + 1})
            for i in range(args.documents)]
    if hits:  # served, so that search keeps them (parley.status's served map)
        await client.hset(StatusStore(client, prefix=args.prefix).served_key(TENANT),
                          "bench-doc", "v1")
    inert: Any = Inert(hits)
    services = Services.assemble(
        settings, redis=client, broker=RedisBroker(client, prefix=args.prefix),
        embedder=inert, store=inert,
        # No rate limits: the bench asks thousands of questions a minute.
        options=GatewayOptions(asks_per_minute=0, tenant_asks_per_minute=0),
    )
    gateway = Gateway(settings, services=services, static_dir=None)
    ws: Any = WS_IMPLEMENTATION if args.ws == "parley" else args.ws
    server = uvicorn.Server(config(gateway, host="127.0.0.1", port=args.port, ws=ws))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    print("READY", flush=True)
    await task


_FILLER = ("Net sales", "operating income", "increased", "decreased", "compared to",
           "the three months ended", "fiscal", "primarily due to", "higher", "lower", "Services",
           "Products", "gross margin", "percentage of total net sales", "research and development",
           "selling, general and administrative", "the Company", "foreign currency", "tax rate")


def filler(seed: int, words: int) -> str:
    """About ``words`` words of a filing's prose and figures, different for each ``seed``
    (what the worker's not-found check reads in a real source; ``--words``)."""
    out: list[str] = []
    n = seed * 7919 + 1
    while len(out) < words:
        n = (n * 1103515245 + 12345) % 2**31
        out.extend(_FILLER[n % len(_FILLER)].split())
        if n % 5 == 0:
            out.append(f"${n % 90_000:,} million ({n % 40}%).")
    return " ".join(out[:words])


def snapshot_on_signal(folder: Path) -> None:
    """Trace allocations from now on, and write a tracemalloc snapshot into ``folder``
    (``0.snap``, ``1.snap``...) at each SIGUSR1 (``bench/sessions.py --trace``)."""
    import signal
    import tracemalloc

    tracemalloc.start(12)
    taken = iter(range(1_000_000))

    def take(_signum: int, _frame: object) -> None:
        tracemalloc.take_snapshot().dump(str(folder / f"{next(taken)}.snap"))
        (folder / "taken").write_text("")

    signal.signal(signal.SIGUSR1, take)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws", default="parley",
                        help="parley (what the gateway ships), websockets-sansio (uvicorn's), "
                             "websockets (uvicorn's legacy) or raw")
    parser.add_argument("--deflate", action="store_true", help="PARLEY_WS_COMPRESSION on")
    parser.add_argument("--documents", type=int, default=0,
                        help="chunks every retrieval returns (0: asks end with no_documents)")
    parser.add_argument("--words", type=int, default=0,
                        help="words of filing-like text added to each chunk (0: one line)")
    parser.add_argument("--parser", default="auto", choices=["auto", "python"],
                        help="auto: hiredis when installed; python: redis-py's own parser")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"],
                        help="uvloop, as uvicorn picks it in production (a dependency)")
    parser.add_argument("--snapshots", type=Path, default=None,
                        help="trace allocations; a tracemalloc snapshot here at each SIGUSR1")
    parser.add_argument("--fds", type=int, default=0,
                        help="open files wanted (the hard limit is raised where allowed)")
    args = parser.parse_args()
    raise_fd_limit(args.fds)
    if args.snapshots is not None:
        snapshot_on_signal(args.snapshots)
    main_coro = serve_raw(args.port) if args.ws == "raw" else serve_gateway(args)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main_coro)
    else:
        asyncio.run(main_coro)


if __name__ == "__main__":
    main()
