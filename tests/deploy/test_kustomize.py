"""The offline renderer agrees with kustomize itself (kubectl's built-in one) on every variant,
and refuses what it does not implement."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import K8S, VARIANTS, aks_secrets_copy, render_aks_secrets, render_variant
from .kustomize import Doc, Unsupported, render


def _key(doc: Doc) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return (doc["kind"], meta.get("namespace", ""), meta["name"])


def _kubectl_render(variant: str, tmp_path: Path) -> list[Doc]:
    overlay, components = VARIANTS[variant]
    root = K8S / "overlays" / overlay
    if components:
        # kustomize takes components from a kustomization: one that points at the overlay's
        # inputs and adds the components, in a temporary directory.
        spec = yaml.safe_load((root / "kustomization.yaml").read_text())

        def rel(path: str) -> str:
            return os.path.relpath(root / path, tmp_path)

        spec["resources"] = [rel(p) for p in spec["resources"]]
        spec["components"] = [rel(f"../../components/{c}") for c in components]
        for generator in spec["configMapGenerator"]:
            generator["envs"] = [rel(e) for e in generator["envs"]]
        (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(spec))
        root = tmp_path
    out = subprocess.run(
        ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(root)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_renderer_matches_kubectl_kustomize(variant: str, tmp_path: Path) -> None:
    ours = {_key(d): d for d in render_variant(variant)}
    theirs = {_key(d): d for d in _kubectl_render(variant, tmp_path)}
    assert sorted(ours) == sorted(theirs)
    for key, doc in ours.items():
        assert doc == theirs[key], key


def _decoded(doc: Doc) -> Doc:
    """A Secret with its values decoded (kubectl folds long base64 values over lines)."""
    if doc["kind"] != "Secret":
        return doc
    data = {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}
    return {**doc, "data": data}


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed"
)
def test_secrets_match_kubectl_kustomize(tmp_path: Path) -> None:
    copy = aks_secrets_copy(tmp_path)
    out = subprocess.run(
        ["kubectl", "kustomize", str(copy)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    theirs = {_key(d): _decoded(d) for d in yaml.safe_load_all(out) if d}
    ours = {_key(d): _decoded(d) for d in render_aks_secrets()}
    assert ours == theirs
    assert {k[2] for k in ours if k[0] == "Secret"} == {"parley-secrets", "parley-redis-keda"}


def test_local_config_inputs_are_left_out() -> None:
    names = {d["metadata"]["name"] for d in render_variant("aks")}
    assert "parley-env" in names
    assert "parley-azure-values" not in names


def test_unknown_kustomization_feature_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("namePrefix: x-\nresources: []\n")
    with pytest.raises(Unsupported, match="namePrefix"):
        render(tmp_path)


def test_patch_without_a_match_fails(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n"
    )
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches:\n  - target: {kind: ConfigMap, name: b}\n"
        "    patch: |-\n      - {op: replace, path: /data/k, value: w}\n"
    )
    with pytest.raises(ValueError, match="matches no resource"):
        render(tmp_path)
