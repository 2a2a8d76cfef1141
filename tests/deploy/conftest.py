"""Renderings of k8s/ shared by the deploy tests: each overlay, and the AKS overlay with each
opt-in component (docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .kustomize import Doc, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "dev": ("dev", ()),
    "aks": ("aks", ()),
    "aks+kaito": ("aks", ("kaito-inference",)),
    "aks+gpu-embed": ("aks", ("gpu-embed",)),
}


def render_variant(name: str) -> list[Doc]:
    overlay, components = VARIANTS[name]
    return render(K8S / "overlays" / overlay, [K8S / "components" / c for c in components])


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    return {name: render_variant(name) for name in VARIANTS}
