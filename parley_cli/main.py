"""The ``parley`` command: run the local stack, ingest, watch status, search, ask.

Every command reads the same settings (environment, then ``.parley/stack.env`` written by
``parley up``), so commands in another terminal find the running local stack.

Exit codes (README, "Commands"): 0 done; 1 done but something failed (a document failed, an
answer ended in an error, a doctor check failed); 2 usage error (bad arguments or settings, no
such file, a refused token); 3 a service cannot be reached (Redis, Chroma, the gateway); 4 timed
out (``ingest --wait --timeout``); 130 interrupted or cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from parley.errors import ParleyError
from parley.settings import STATE_DIR, Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4  # parley_cli.progress.TIMED_OUT
EXIT_INTERRUPTED = 130


def _files(paths: Sequence[str]) -> list[tuple[Path, str]]:
    """(file, folder inside the tenant) for every file named, and every document found under a
    directory: a file there counts when its bytes are a kind Parley reads
    (:func:`parley.filetypes.detect`, whatever its name); hidden files and folders are skipped."""
    from parley.filetypes import UnsupportedType, detect

    found: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path)
                if any(part.startswith(".") for part in relative.parts) or not child.is_file():
                    continue
                try:
                    detect(child.read_bytes())
                except (UnsupportedType, OSError):
                    continue
                found.append((child, relative.parent.as_posix().strip(".")))
        elif path.is_file():
            found.append((path, ""))
        else:
            raise ParleyError(f"{raw}: no such file or directory", reason="not_found")
    return found


async def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    import contextlib

    from backends.clients import open_clients
    from parley.ids import TenantId, document_id
    from parley.uploads import upload

    tenant = TenantId(args.tenant or settings.default_tenant)
    files = _files(args.paths)
    if not files:
        print("no documents found (PDF, DOCX, PPTX, XLSX, HTML, Markdown or text)", file=sys.stderr)
        return EXIT_USAGE
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, settings, blobs=True)
        broker = clients.brokers.for_queue(settings.queues.ingest)
        ids = []
        for path, folder in files:
            request, _info = await upload(
                settings,
                blobs=clients.blobs,
                broker=broker,
                tenant=tenant,
                filename=path.name,
                data=path.read_bytes(),
                folder=folder,
                redis=clients.redis,
                status=clients.status,
            )
            ids.append((document_id(tenant, request.path), path.name))
            if not args.wait and not args.json:
                print(f"queued  {request.path}")
        if args.json:
            from parley_cli.progress import settle

            return await _ingest_json(clients.status, tenant, ids, settle, args)
        if args.wait:
            from parley_cli.progress import watch

            return await watch(clients.status, tenant, ids, timeout=args.timeout)
    return EXIT_OK


async def _ingest_json(
    status: Any, tenant: str, ids: list[Any], settle: Any, args: argparse.Namespace
) -> int:
    """``ingest --json``: the documents' status records as a JSON list, once queued or (with
    ``--wait``) once each is ready or failed; the exit code as without --json."""
    from parley.ids import TenantId
    from parley.status import Stage

    code = EXIT_OK
    if args.wait:
        code = await settle(status, TenantId(tenant), [doc for doc, _ in ids],
                            timeout=args.timeout)
    rows = []
    for doc, name in ids:
        record = await status.get(TenantId(tenant), doc)
        rows.append(record.model_dump(mode="json") if record is not None
                    else {"document_id": doc, "filename": name, "stage": Stage.QUEUED.value})
    print(json.dumps(rows, indent=2, ensure_ascii=False))
    return code


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    import contextlib

    from backends.clients import open_clients
    from parley.ids import TenantId

    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, settings)
        tenants = [TenantId(args.tenant)] if args.tenant else await clients.status.tenants()
        rows = [d for t in tenants for d in await clients.status.documents(t)]
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return 0
    if not rows:
        print("no documents yet: parley ingest FILE...")
        return 0
    print(f"{'document':40} {'stage':10} {'pages':>9} {'chunks':>7}  updated   reason")
    for r in rows:
        pages = f"{r.pages_done}/{r.pages_total}" if r.pages_total else "-"
        updated = time.strftime("%H:%M:%S", time.localtime(r.updated_at))
        note = r.message or ""
        print(
            f"{r.filename[:40]:40} {r.stage.value:10} {pages:>9} {r.chunks:>7}  {updated}  {note}"
        )
    return 0


async def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    import contextlib

    from backends.clients import open_clients
    from chat_gateway.search import Lexical, Searcher, open_switch
    from parley.ids import TenantId

    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, settings, vectors=True)
        switch = await open_switch(stack, settings, clients.redis)
        searcher = Searcher(
            clients.embedder, clients.vectors, clients.status, switch=switch,
            lexical=Lexical.for_store(
                clients.vectors, clients.redis, prefix=clients.settings.redis_prefix
            ),
        )
        hits = await searcher.search(
            TenantId(args.tenant or settings.default_tenant), args.query, k=args.k
        )
    from chat_gateway import citations

    rows = [
        {
            "document": h.metadata.get("filename", ""),
            "page": h.metadata.get("page"),
            "heading": h.metadata.get("heading"),
            "entity": h.metadata.get("entity"),
            "period": h.metadata.get("period"),
            "location": citations.from_metadata(h.metadata),  # slide, sheet, heading, OCR
            "text": h.text,
            "score": round(h.score, 4),
            "chunk_id": h.chunk_id,
            "document_id": h.document_id,
        }
        for h in hits
    ]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no matches (no documents ready for this tenant yet?)")
    for n, row in enumerate(rows, 1):
        where = f" ({row['location']})" if row["location"] else ""
        print(f"[{n}] {row['document']}{where}  score {row['score']:.3f}")
        print("    " + str(row["text"])[:300].replace("\n", " ") + "\n")
    return 0


async def cmd_ask(settings: Settings, args: argparse.Namespace) -> int:
    from chat_gateway.client import ask

    return await ask(settings, args.question, tenant=args.tenant, out=sys.stdout,
                     token=args.token, as_json=args.json, answer_mode=args.mode)


async def cmd_feedback(settings: Settings, args: argparse.Namespace) -> int:
    from parley_cli.feedback import export

    return await export(settings, tenant=args.tenant, as_json=args.json, out=sys.stdout)


async def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from parley_cli.deadletters import command

    return await command(settings, args)


async def cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    from parley_cli.doctor import command

    return await command(settings, args)


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    tenant = args.tenant or settings.default_tenant
    for pair in settings.local_tokens.get_secret_value().split(","):
        token, _, token_tenant = pair.partition(":")
        if token_tenant.strip() == tenant:
            print(token.strip())
            return 0
    print(
        f"no local token for tenant {tenant!r}: add 'TOKEN:{tenant}' to PARLEY_LOCAL_TOKENS",
        file=sys.stderr,
    )
    return EXIT_FAILED


def cmd_schemas(settings: Settings, args: argparse.Namespace) -> int:
    from parley_cli.schemas import write_schemas

    for path in write_schemas(Path(args.out)):
        print(path)
    return 0


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from parley_cli.stack import run_stack

    return run_stack(Path(args.state), with_chat=not args.no_chat)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"parley {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole system locally (Ctrl-C stops it)")
    up.add_argument("--state", default=STATE_DIR,
                    help="folder for data and logs (PARLEY_STATE, else .parley); commands find "
                         "the stack from PARLEY_STATE")
    up.add_argument("--no-chat", action="store_true", help="ingestion only (no model)")

    ingest = sub.add_parser(
        "ingest", help="upload documents (PDF, Office, HTML, Markdown, text) or folders"
    )
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--tenant")
    ingest.add_argument("--wait", action="store_true", help="show progress until done")
    ingest.add_argument("--timeout", type=float, default=1800.0)
    ingest.add_argument("--json", action="store_true",
                        help="print the documents' status records as JSON (no progress bars)")

    status = sub.add_parser("status", help="list documents and their stage")
    status.add_argument("--tenant")
    status.add_argument("--json", action="store_true")

    search = sub.add_parser("search", help="the chunks that best match a query")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5)
    search.add_argument("--tenant")
    search.add_argument("--json", action="store_true")

    ask = sub.add_parser("ask", help="ask a question; the answer streams with its sources")
    ask.add_argument("question")
    ask.add_argument("--mode", choices=("extractive", "generative"),
                     help="how the answer is made (default: the gateway's PARLEY_ANSWER_MODE)")
    ask.add_argument("--tenant")
    ask.add_argument("--token", help="an access token (default: the tenant's local token)")
    ask.add_argument("--json", action="store_true",
                     help="print one JSON object: answer, citations, sources, model, usage")

    feedback = sub.add_parser("feedback", help="users' ratings of answers")
    feedback_sub = feedback.add_subparsers(dest="feedback_command", required=True)
    export = feedback_sub.add_parser(
        "export", help="every rating with its question, answer and sources (--json: an "
                       "evaluation set, one JSON object a line, that `python -m bench answers` "
                       "reads)")
    export.add_argument("--tenant")
    export.add_argument("--json", action="store_true")

    token = sub.add_parser("token", help="print a local access token for scripts")
    token.add_argument("--tenant")

    schemas = sub.add_parser("schemas", help="write the JSON Schemas of the queue messages")
    schemas.add_argument("--out", default="docs/contracts")

    from parley_cli import deadletters, doctor

    deadletters.add_parser(sub)
    doctor.add_parser(sub)
    return parser


COMMANDS = {
    "ingest": cmd_ingest,
    "status": cmd_status,
    "search": cmd_search,
    "ask": cmd_ask,
    "dlq": cmd_dlq,
    "doctor": cmd_doctor,
    "feedback": cmd_feedback,
}
SIGPIPE_EXIT = 128 + 13  # what a shell reports for a command ended by SIGPIPE
SYNC_COMMANDS = {"token": cmd_token, "schemas": cmd_schemas, "up": cmd_up}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("parley")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    from parley import logs

    try:
        settings = Settings()
    except ValidationError as exc:
        from parley_cli.doctor import explain_settings_error

        print(explain_settings_error(exc), file=sys.stderr)
        return EXIT_USAGE
    logs.configure("WARNING", json=False)
    try:
        if args.command in SYNC_COMMANDS:
            code = SYNC_COMMANDS[args.command](settings, args)
        else:
            code = asyncio.run(COMMANDS[args.command](settings, args))
        sys.stdout.flush()  # a reader gone shows here, inside this try, not at exit
        return code
    except ParleyError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE if exc.reason.endswith("unreachable") else EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`parley status --json | head`): stop quietly, as a shell
        # tool does on SIGPIPE. Stdout now points at /dev/null, so the interpreter's final
        # flush of what is still buffered cannot complain either.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return SIGPIPE_EXIT
    except (OSError, RedisConnectionError) as exc:
        print(
            f"parley: cannot reach a service: {exc}\n"
            "(is the local stack running? start it with: parley up)",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
