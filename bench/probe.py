"""``python bench/probe.py OUT gateway SCRIPT [ARGS]`` or ``... OUT worker -m MODULE [ARGS]``:
run a gateway (``bench/gateway_server.py``) or an inference worker (``-m inference_worker``)
with timestamps taken where a turn's FIRST token passes, appended to OUT as one JSON line per
turn (``{"turn": id, "<stage>": unix time, ...}``), for ``bench.ttft``'s split of the first
token by stage. Nothing of it is in the production code: the stages are wrapped here, on the
classes of whatever tree is on ``PYTHONPATH`` (so ``--before``'s tree is probed alike); a stage
whose function that tree does not have is left out of its lines.

Gateway stages: ``ask`` (the ask's task starts: the frame read and parsed), ``retrieved``
(retrieval returned), ``publish`` (the turn's publish is queued on the ask's pipeline, last
before it is sent), ``queued`` (``Turns.start`` returned: that pipeline answered),
``read`` (the tailer hands out the turn's first batch holding a token), ``woke`` (the relay,
woken, builds its first token frame), ``sent`` (that frame's send returned: written to the
socket). Worker stages: ``received`` (the broker's receive returned the message), ``handling``
(the handler starts on it), ``state`` (its read of the turn's state answered), ``request`` (the
upstream's ``open``: the HTTP request is being sent), ``token`` (the model's first piece reaches
the outbox), ``flush`` (the outbox's flush carrying it starts) and ``flushed`` (Redis answered
that flush).

Each wrapper costs a dict look-up or a check per call after a turn's first token; a line is
written (one ``write``) once a turn's last stage in this process is taken. ``time.time()``:
the processes share one clock (one machine)."""

from __future__ import annotations

import contextvars
import functools
import json
import os
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Recorder:
    """Stages per turn, each taken once; a turn's line is written when ``last`` is taken."""

    def __init__(self, path: str, last: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._last = last
        self.turns: dict[str, dict[str, float]] = {}

    def mark(self, turn_id: str, stage: str, at: float | None = None) -> None:
        stages = self.turns.get(turn_id)
        if stages is None:
            stages = self.turns[turn_id] = {}
        if stage in stages:
            return
        stages[stage] = time.time() if at is None else at
        if stage == self._last:
            del self.turns[turn_id]
            os.write(self._fd, (json.dumps({"turn": turn_id, **stages}) + "\n").encode())

    def open_turn(self, turn_id: str) -> bool:
        """The turn has stages taken and its line is not written yet."""
        return turn_id in self.turns


def _wrap(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    original = getattr(owner, name, None)
    if original is not None:
        setattr(owner, name, functools.wraps(original)(make(original)))


def probe_gateway(rec: Recorder) -> None:
    import chat_gateway.relay as relay
    import chat_gateway.retrieval as retrieval
    import chat_gateway.session as session
    import chat_gateway.tailer as tailer
    import chat_gateway.turns as turns
    import parley.broker.redis as broker

    # The ask's stages before its turn id exists, in the ask's task.
    asking: contextvars.ContextVar[dict[str, float]] = contextvars.ContextVar("asking")

    def ask(original: Any) -> Any:
        async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            asking.set({"ask": time.time()})
            return await original(self, *args, **kwargs)
        return run

    def retrieve(original: Any) -> Any:
        async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            found = await original(self, *args, **kwargs)
            asking.get({})["retrieved"] = time.time()
            return found
        return run

    def publish_on(original: Any) -> Any:
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            asking.get({})["publish"] = time.time()
            return original(self, *args, **kwargs)
        return run

    def start(original: Any) -> Any:
        async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = await original(self, *args, **kwargs)
            for stage, at in asking.get({}).items():
                rec.mark(started.turn_id, stage, at)
            rec.mark(started.turn_id, "queued")
            return started
        return run

    def put(original: Any) -> Any:
        def run(self: Any, batch: Any, *args: Any) -> Any:
            if rec.open_turn(self.turn_id) and any(e.kind == "token" for e in batch):
                rec.mark(self.turn_id, "read")
            return original(self, batch, *args)
        return run

    def frame(original: Any) -> Any:
        def run(turn_id: str, events: Any) -> Any:
            if rec.open_turn(turn_id):
                rec.mark(turn_id, "woke")
            return original(turn_id, events)
        return run

    def relay_run(original: Any) -> Any:
        async def run(self: Any, turn_id: str, meta: Any, send: Any, **kwargs: Any) -> Any:
            async def timed(text: str) -> None:
                await send(text)
                if text.startswith('{"type":"token"') and rec.open_turn(turn_id):
                    rec.mark(turn_id, "sent")
            return await original(self, turn_id, meta, timed, **kwargs)
        return run

    _wrap(session.Session, "_ask", ask)
    _wrap(turns.Turns, "start", start)
    _wrap(retrieval.Retriever, "retrieve", retrieve)
    _wrap(broker.RedisBroker, "publish_on", publish_on)
    _wrap(getattr(tailer, "_Subscriber", None), "put", put)
    _wrap(relay, "token_frame", frame)
    _wrap(relay.Relay, "run", relay_run)


def probe_worker(rec: Recorder) -> None:
    import structlog

    import inference_worker.handler as handler
    import inference_worker.openai_backend as backend
    import inference_worker.outbox as outbox
    import parley.broker.redis as broker
    from parley.contracts import TURN_HEADER

    def current() -> str | None:
        turn_id = structlog.contextvars.get_contextvars().get("turn_id")
        return turn_id if isinstance(turn_id, str) else None

    def receive(original: Any) -> Any:
        async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            messages = await original(self, *args, **kwargs)
            now = time.time()
            for message in messages:
                turn_id = message.headers.get(TURN_HEADER)
                if turn_id:
                    rec.mark(turn_id, "received", now)
            return messages
        return run

    def handle(original: Any) -> Any:
        async def run(self: Any, turn: Any, *args: Any) -> Any:
            rec.mark(turn.turn_id, "handling")
            return await original(self, turn, *args)
        return run

    def state(original: Any) -> Any:
        async def run(self: Any, turn_id: str) -> Any:
            result = await original(self, turn_id)
            if rec.open_turn(turn_id):
                rec.mark(turn_id, "state")
            return result
        return run

    def request(original: Any) -> Any:
        async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            turn_id = current()
            if turn_id is not None:
                rec.mark(turn_id, "request")
            return await original(self, *args, **kwargs)
        return run

    awaiting: dict[Any, str] = {}  # turn outputs holding a first token not yet flushed

    def token(original: Any) -> Any:
        def run(self: Any, text: str) -> Any:
            if self.tokens == 0:
                turn_id = self.writer.turn_id
                rec.mark(turn_id, "token")
                awaiting[self] = turn_id
            return original(self, text)
        return run

    def flush(original: Any) -> Any:
        async def run(self: Any) -> Any:
            if not awaiting:
                return await original(self)
            firsts = [turn_id for turn, turn_id in awaiting.items() if turn in self._dirty]
            for turn_id in firsts:
                rec.mark(turn_id, "flush")
            awaiting.clear()
            try:
                return await original(self)
            finally:
                now = time.time()
                for turn_id in firsts:
                    rec.mark(turn_id, "flushed", now)
        return run

    _wrap(broker.RedisBroker, "receive", receive)
    _wrap(handler.TurnHandler, "handle", handle)
    _wrap(handler.TurnHandler, "_state", state)
    _wrap(getattr(backend, "CompatibleClient", None), "open", request)
    _wrap(outbox.TurnOutput, "token", token)
    _wrap(outbox.Outbox, "_flush", flush)


def main() -> None:
    out, side, *rest = sys.argv[1:]
    # Not this folder on the path (python puts a script's own there): bench/'s modules would
    # shadow top-level names.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p != here]
    module = rest[0] == "-m"
    target = rest[1] if module else rest[0]
    sys.argv = [target, *rest[2 if module else 1:]]
    if not module:
        sys.path.insert(0, str(Path(target).resolve().parent))
    if side == "gateway":
        probe_gateway(Recorder(out, last="sent"))
    else:
        probe_worker(Recorder(out, last="flushed"))
    if module:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main()
