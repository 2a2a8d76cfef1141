"""The CRDs vendored for the tests are the shared, upstream ones."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import shared_path

VENDORED = Path(__file__).parent / "crds"


def test_vendored_crds_equal_the_shared_copies() -> None:
    shared = shared_path("crds")
    files = sorted(p.name for p in VENDORED.glob("*.yaml"))
    assert len(files) == 5
    for name in files:
        assert (VENDORED / name).read_bytes() == (shared / name).read_bytes(), name
