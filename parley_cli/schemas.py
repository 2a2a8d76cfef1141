"""Export the JSON Schemas of the queue messages (``parley schemas``) into docs/contracts/."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from parley.contracts import ChatTurn, ChunkBatch, IngestRequest
from parley.status import DocumentStatus

MODELS: dict[str, type[BaseModel]] = {
    "parley.ingest.v1": IngestRequest,
    "parley.chunks.v1": ChunkBatch,
    "parley.chat.v1": ChatTurn,
    "parley.document-status.v1": DocumentStatus,
}


def schema(model: type[BaseModel]) -> dict[str, object]:
    return model.model_json_schema(by_alias=True, mode="validation")


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in MODELS.items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(schema(model), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
