"""``parley feedback export``: users' ratings of answers (chat_gateway/feedback.py), as a table
or, with ``--json``, as an evaluation set: one JSON object a line with ``question``, ``answer``,
``reference`` (null), ``sources``, ``rating``, ``comment`` and ``model`` (and ``turn_id``,
``tenant``, ``created``), which ``python -m bench answers`` reads. Oldest first."""

from __future__ import annotations

import json
import time
from typing import TextIO

import redis.asyncio as aioredis

from chat_gateway.feedback import FeedbackStore, eval_line
from parley.settings import Settings


async def export(settings: Settings, *, tenant: str | None, as_json: bool, out: TextIO) -> int:
    client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    try:
        records = await FeedbackStore(client, keys=settings.keys).all(tenant)
    finally:
        await client.aclose()
    if as_json:
        for record in records:
            out.write(json.dumps(eval_line(record), ensure_ascii=False) + "\n")
        return 0
    if not records:
        out.write("no feedback yet\n")
        return 0
    out.write(f"{'when':16} {'rating':6} {'tenant':12} question / comment\n")
    for record in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created))
        out.write(f"{when:16} {record.rating:6} {record.tenant[:12]:12} "
                  f"{' '.join(record.question.split())[:70]}\n")
        if record.comment:
            out.write(f"{'':36}\u201c{' '.join(record.comment.split())[:70]}\u201d\n")
    ups = sum(r.rating == "up" for r in records)
    out.write(f"\n{len(records)} ratings: {ups} up, {len(records) - ups} down\n")
    return 0
