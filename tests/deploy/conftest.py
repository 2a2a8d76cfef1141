"""Renderings of k8s/ shared by the deploy tests: each overlay, and the AKS overlay with each
opt-in component and with both (docs/deploy.md)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from .kustomize import Doc, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
AKS_SECRETS = K8S / "overlays" / "aks" / "secrets"
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "dev": ("dev", ()),
    "aks": ("aks", ()),
    "aks+kaito": ("aks", ("kaito-inference",)),
    "aks+gpu-embed": ("aks", ("gpu-embed",)),
    "aks+kaito+gpu-embed": ("aks", ("kaito-inference", "gpu-embed")),
}


def render_variant(name: str) -> list[Doc]:
    overlay, components = VARIANTS[name]
    return render(K8S / "overlays" / overlay, [K8S / "components" / c for c in components])


def aks_secrets_copy(where: Path, source: Path = AKS_SECRETS) -> Path:
    """A copy of the AKS secrets kustomization under ``where`` with Terraform's files made from
    the committed examples (``*.env.example``; ``terraform apply`` writes the real ``*.env``,
    which git ignores)."""
    copy = where / "overlays" / "aks" / "secrets"
    shutil.copytree(source, copy)
    shutil.copytree(K8S / "base", where / "base")
    for example in copy.glob("*.env.example"):
        example.rename(example.with_suffix(""))
    return copy


def render_aks_secrets(source: Path = AKS_SECRETS) -> list[Doc]:
    """The AKS secrets kustomization as Terraform's files make it (see aks_secrets_copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        return render(aks_secrets_copy(Path(tmp), source))


def render_deployed(name: str) -> list[Doc]:
    """What a cluster holds for the variant: on AKS the overlay plus its secrets."""
    docs = render_variant(name)
    if VARIANTS[name][0] == "aks" and AKS_SECRETS.is_dir():
        known = {(d["kind"], d["metadata"]["name"]) for d in docs}
        docs += [d for d in render_aks_secrets() if (d["kind"], d["metadata"]["name"]) not in known]
    return docs


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    return {name: render_variant(name) for name in VARIANTS}


@pytest.fixture(scope="session")
def deployed() -> dict[str, list[Doc]]:
    return {name: render_deployed(name) for name in VARIANTS}
