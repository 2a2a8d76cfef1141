"""A terminal client of the websocket protocol, behind ``parley ask``: it connects like any
client, prints the answer's tokens as they arrive, then the sources the answer cited. When the
checked answer of the final event differs from what streamed (an unknown citation removed, a
citation attributed), it is printed again; figures not found in the cited sources are listed
after it with a warning. On a terminal, "searching…" shows until the first token; with
``as_json`` nothing streams and one JSON object is printed at the end (the checked answer,
citations, sources, model, usage, unsupported figures, or the error).

A dropped connection is resumed (from the last offset printed, so nothing is printed twice) up
to ``retries`` times; Ctrl-C closes the socket cleanly (code 1000), which cancels the turn."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TextIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat_gateway.auth import LocalTokens
from parley.settings import Settings

# Exit codes (the same as the ``parley`` command's, parley_cli/main.py).
ANSWERED = 0
FAILED = 1  # the answer ended in an error event
REFUSED = 2  # no token, or the gateway refused it: a usage error
UNREACHABLE = 3  # the gateway could not be reached
CANCELLED = 130
SEARCHING = "searching…"


def gateway_url(settings: Settings) -> str:
    host = settings.gateway_host if settings.gateway_host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"ws://{host}:{settings.gateway_port}/ws"


def format_source(source: dict[str, Any]) -> str:
    place = source.get("location") or (f"page {source['page']}" if source.get("page") else "")
    page = f", {place}" if place else ""
    return f"  [{source['n']}] {source['document']}{page}: {source.get('snippet', '')}"


def write_checks(out: TextIO, final: dict[str, Any], streamed: str) -> None:
    """What the final event's checks say, for a reader: the checked text when it differs from
    the streamed one, and the figures the cited sources do not hold."""
    text = final.get("text")
    if isinstance(text, str) and text.strip() != streamed.strip():
        out.write(f"\nChecked answer:\n{text}\n")
    unsupported = final.get("unsupported_numbers") or []
    if unsupported:
        out.write("\nWarning: not found in the cited sources, check these figures: "
                  f"{', '.join(map(str, unsupported))}\n")


async def _events(ws: ClientConnection) -> Any:
    async for raw in ws:
        yield json.loads(raw)


async def ask(
    settings: Settings,
    question: str,
    tenant: str | None = None,
    *,
    out: TextIO,
    url: str | None = None,
    token: str | None = None,
    conversation_id: str | None = None,
    retries: int = 3,
    answer_mode: str | None = None,
    as_json: bool = False,
) -> int:
    """Ask over the websocket and print the streamed answer and its cited sources to ``out``
    (errors to stderr), or with ``as_json`` one JSON object. Returns an exit code:
    :data:`ANSWERED`, :data:`FAILED`, :data:`REFUSED`, :data:`UNREACHABLE` or
    :data:`CANCELLED`."""
    tenant = tenant or settings.default_tenant
    token = token or LocalTokens(settings.local_tokens.get_secret_value()).token_for(tenant)
    if token is None:
        print(f"no local token for tenant {tenant!r}: set PARLEY_LOCAL_TOKENS or pass --token",
              file=sys.stderr)
        return REFUSED
    searching = not as_json and out.isatty()
    result: dict[str, Any] = {}

    def clear_searching() -> None:
        nonlocal searching
        if searching:
            out.write("\r" + " " * len(SEARCHING) + "\r")
            searching = False

    def json_out(data: dict[str, Any]) -> None:
        out.write(json.dumps(data, ensure_ascii=False) + "\n")
        out.flush()

    target = url or gateway_url(settings)
    message: dict[str, Any] = {"type": "ask", "question": question}
    if conversation_id:
        message["conversation_id"] = conversation_id
    if answer_mode:
        message["answer_mode"] = answer_mode
    streamed: list[str] = []
    turn_id: str | None = None
    offset = "0-0"
    sources: list[dict[str, Any]] = []
    for attempt in range(retries + 1):
        try:
            async with connect(target, additional_headers={"Authorization": f"Bearer {token}"},
                               max_size=2**22, compression=None) as ws:
                await ws.recv()  # ready
                if searching:
                    out.write(SEARCHING)
                    out.flush()
                if turn_id is None:
                    await ws.send(json.dumps(message))
                else:
                    await ws.send(json.dumps({"type": "resume", "turn_id": turn_id,
                                              "offset": offset}))
                async for event in _events(ws):
                    kind = event["type"]
                    if "offset" in event:
                        offset = event["offset"]
                    if kind == "turn":
                        turn_id = event["turn_id"]
                        result["turn_id"] = turn_id
                        result["conversation_id"] = event.get("conversation_id")
                    elif kind == "sources":
                        sources = event["sources"]
                    elif kind == "token" and as_json:
                        continue
                    elif kind == "token":
                        clear_searching()
                        streamed.append(event["text"])
                        out.write(event["text"])
                        out.flush()
                    elif kind == "final" and as_json:
                        json_out({**result, "answer": event.get("text", ""),
                                  "citations": event.get("citations") or [],
                                  "sources": sources, "model": event.get("model"),
                                  "finish_reason": event.get("finish_reason"),
                                  "usage": event.get("usage"),
                                  "answer_mode": event.get("answer_mode"),
                                  "unsupported_numbers": event.get("unsupported_numbers") or []})
                        return ANSWERED
                    elif kind == "final":
                        clear_searching()
                        out.write("\n")
                        write_checks(out, event, "".join(streamed))
                        cited = event.get("citations") or []
                        if cited or sources:
                            out.write("\nSources:\n")
                            for source in cited or sources:
                                out.write(format_source(source) + "\n")
                        out.flush()
                        return ANSWERED
                    elif kind == "cancelled":
                        clear_searching()
                        if as_json:
                            json_out({**result, "cancelled": True})
                        else:
                            out.write("\n[cancelled]\n")
                        return CANCELLED
                    elif kind == "error":
                        clear_searching()
                        hint = f" ({event['hint']})" if event.get("hint") else ""
                        if as_json:
                            json_out({**result, "error": {k: event.get(k) for k in
                                                          ("code", "message", "hint")}})
                        print(f"\nerror: {event['message']}{hint}", file=sys.stderr)
                        return FAILED
        except InvalidStatus as exc:
            clear_searching()
            status = exc.response.status_code
            print(f"the gateway refused the connection: HTTP {status}"
                  + (" (check the token: --token, or PARLEY_LOCAL_TOKENS)" if status == 401
                     else ""), file=sys.stderr)
            return REFUSED if status in (401, 403) else FAILED
        except (ConnectionClosed, OSError) as exc:
            clear_searching()
            if attempt == retries:
                print(f"\nlost the gateway at {target}: {exc}", file=sys.stderr)
                return UNREACHABLE if turn_id is None else FAILED
            await asyncio.sleep(0.5 * (attempt + 1))
    return FAILED
