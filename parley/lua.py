"""Redis Lua scripts live in ``.lua`` files beside the module that runs them (package data),
read once when that module is imported."""

from __future__ import annotations

from importlib import resources


def script(package: str | None, name: str) -> str:
    """The text of the Lua file ``name`` in ``package`` (pass the caller's ``__package__``)."""
    if not package:
        raise ValueError(f"{name}: a Lua script belongs to a package")
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")
