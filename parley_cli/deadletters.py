"""Dead letters a person can act on, across every queue and both broker backends: list them with
their reason and attempt count, show one with its original message, replay one or all (after
fixing the cause), purge them. ``parley dlq ...`` is the command line over these functions.

A dead letter's id is the backend's: a Redis stream entry id (``1718000000000-0``) or a Service
Bus message id. Commands that take an id look through every queue unless ``--queue`` narrows
it. Replaying puts the original body and headers back on the queue as a new message whose
attempts count from 1; the worker then handles it like any other (idempotently).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from backends.clients import Brokers
from parley.broker import DeadLetter
from parley.errors import NotFound, ParleyError
from parley.settings import QueueSettings, Settings

SCAN_LIMIT = 10_000


@dataclass(frozen=True)
class Found:
    queue: QueueSettings
    letter: DeadLetter


def queues(settings: Settings, only: str | None = None) -> list[QueueSettings]:
    """The queues to look at: all, or the one named by its logical name (``ingest``) or its
    queue name (``parley-ingest``)."""
    every = {"ingest": settings.queues.ingest, "embed": settings.queues.embed,
             "chat": settings.queues.chat}
    if only is None:
        return list(every.values())
    for logical, queue in every.items():
        if only in (logical, queue.name):
            return [queue]
    names = ", ".join(f"{k} ({q.name})" for k, q in every.items())
    raise ParleyError(f"no queue {only!r}", reason="not_found", hint=f"queues: {names}")


async def dead_letters(
    brokers: Brokers, settings: Settings, *, queue: str | None = None, limit: int = 100
) -> list[Found]:
    """The oldest ``limit`` dead letters of each queue, oldest first per queue."""
    found: list[Found] = []
    for q in queues(settings, queue):
        letters = await brokers.for_queue(q).dead_letters(q.name, limit=limit)
        found += [Found(q, letter) for letter in letters]
    return found


async def find(
    brokers: Brokers, settings: Settings, letter_id: str, *, queue: str | None = None
) -> Found:
    for item in await dead_letters(brokers, settings, queue=queue, limit=SCAN_LIMIT):
        if item.letter.id == letter_id:
            return item
    raise NotFound(
        f"no dead letter {letter_id!r}" + (f" on {queue}" if queue else ""),
        hint="parley dlq list shows the ids",
    )


async def replay(
    brokers: Brokers, settings: Settings, letter_id: str, *, queue: str | None = None
) -> Found:
    """Put one dead letter back on its queue; raises :class:`NotFound` when there is none."""
    item = await find(brokers, settings, letter_id, queue=queue)
    if not await brokers.for_queue(item.queue).replay_dead_letter(item.queue.name, letter_id):
        raise NotFound(f"dead letter {letter_id!r} went away meanwhile (replayed elsewhere?)")
    return item


async def replay_all(
    brokers: Brokers, settings: Settings, *, queue: str | None = None
) -> dict[str, int]:
    """Replay every dead letter (of one queue or all); returns how many per queue."""
    done: dict[str, int] = {}
    for q in queues(settings, queue):
        broker = brokers.for_queue(q)
        for letter in await broker.dead_letters(q.name, limit=SCAN_LIMIT):
            if await broker.replay_dead_letter(q.name, letter.id):
                done[q.name] = done.get(q.name, 0) + 1
    return done


async def purge(
    brokers: Brokers, settings: Settings, *, queue: str | None = None
) -> dict[str, int]:
    """Remove the dead letters (of one queue or all); returns how many per queue."""
    return {
        q.name: await brokers.for_queue(q).purge_dead_letters(q.name)
        for q in queues(settings, queue)
    }


# --- presentation ------------------------------------------------------------------------------


def summary(item: Found) -> str:
    letter = item.letter
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.failed_at))
    reason = " ".join(letter.reason.split())
    if len(reason) > 90:
        reason = reason[:87] + "..."
    return f"{item.queue.name:16} {letter.id:36} {letter.attempt:>3}  {when}  {reason}"


def details(item: Found) -> str:
    letter = item.letter
    try:
        body = json.dumps(json.loads(letter.body), indent=2, ensure_ascii=False)
    except ValueError:
        body = letter.body[:4000].decode(errors="replace")
    lines = [
        f"queue      {item.queue.name} ({item.queue.backend.value})",
        f"id         {letter.id}",
        f"attempts   {letter.attempt}",
        f"failed at  {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(letter.failed_at))}",
        f"reason     {letter.reason}",
    ]
    lines += [f"header     {k}: {v}" for k, v in sorted(letter.headers.items())]
    lines += ["message", body]
    return "\n".join(lines)


def as_json(item: Found) -> dict[str, object]:
    letter = item.letter
    return {
        "queue": item.queue.name,
        "backend": item.queue.backend.value,
        "id": letter.id,
        "attempt": letter.attempt,
        "reason": letter.reason,
        "failed_at": letter.failed_at,
        "headers": dict(letter.headers),
        "body": letter.body.decode(errors="replace"),
    }


async def command(
    settings: Settings, args: argparse.Namespace, out: TextIO | None = None
) -> int:
    """``parley dlq list|show|replay|purge``: see :mod:`parley_cli.main`."""
    out = out or sys.stdout
    import contextlib

    from backends.clients import open_clients

    async with contextlib.AsyncExitStack() as stack:
        brokers = (await open_clients(stack, settings)).brokers
        action = args.dlq_command
        if action == "list":
            found = await dead_letters(brokers, settings, queue=args.queue, limit=args.limit)
            if args.json:
                print(json.dumps([as_json(f) for f in found], indent=2), file=out)
            elif not found:
                print("no dead letters", file=out)
            else:
                print(f"{'queue':16} {'id':36} {'try':>3}  {'failed at':19}  reason", file=out)
                for item in found:
                    print(summary(item), file=out)
            return 0
        if action == "show":
            item = await find(brokers, settings, args.id, queue=args.queue)
            print(json.dumps(as_json(item), indent=2) if args.json else details(item), file=out)
            return 0
        if action == "replay":
            if args.all == bool(args.id):
                print("parley dlq replay: give an ID or --all", file=sys.stderr)
                return 2
            if args.all:
                counts = await replay_all(brokers, settings, queue=args.queue)
                for name, n in counts.items():
                    print(f"replayed {n} on {name}", file=out)
                if not counts:
                    print("no dead letters to replay", file=out)
                return 0
            item = await replay(brokers, settings, args.id, queue=args.queue)
            print(f"replayed {args.id} on {item.queue.name}", file=out)
            return 0
        counts = await purge(brokers, settings, queue=args.queue)
        for name, n in counts.items():
            print(f"purged {n} from {name}", file=out)
        return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``dlq`` subcommand and its own subcommands."""
    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay, purge")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = actions.add_parser("list", help="dead letters with reason and attempts")
    listing.add_argument("--queue", help="ingest, embed, chat (or a queue name)")
    listing.add_argument("--limit", type=int, default=100, help="per queue")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one dead letter with its original message")
    show.add_argument("id")
    show.add_argument("--queue")
    show.add_argument("--json", action="store_true")
    again = actions.add_parser("replay", help="put one (ID) or all (--all) back on the queue")
    again.add_argument("id", nargs="?")
    again.add_argument("--all", action="store_true")
    again.add_argument("--queue")
    purge_ = actions.add_parser("purge", help="delete the dead letters")
    purge_.add_argument("--queue")
