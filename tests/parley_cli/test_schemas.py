"""The JSON Schemas in docs/contracts/ are the ones the code generates (run ``parley schemas``
after changing a contract), and the documented examples validate against them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from parley_cli.schemas import MODELS, schema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "contracts"


def test_committed_schemas_are_current() -> None:
    for name, model in MODELS.items():
        path = DOCS / f"{name}.schema.json"
        assert path.exists(), f"{path} missing: run parley schemas"
        assert json.loads(path.read_text()) == schema(model), f"{path} is stale: parley schemas"


def test_documented_ingest_examples_validate() -> None:
    ingest = json.loads((DOCS / "parley.ingest.v1.schema.json").read_text())
    for example in (
        {"schema": "parley.ingest.v1", "path": "acme/reports/q3.pdf"},
        {"schema": "parley.ingest.v1", "action": "delete", "path": "acme/reports/q3.pdf"},
    ):
        jsonschema.validate(example, ingest)
    try:
        jsonschema.validate({"schema": "parley.ingest.v1", "action": "move", "path": "x"}, ingest)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("an unknown action validated")
