"""docs/deploy.md walks from an empty subscription to a signed-in chat with commands that can be
run again, pinned versions, and no secret or output copied by hand."""

from __future__ import annotations

import re
import shlex

import yaml

from .conftest import ROOT

DOC = ROOT / "docs" / "deploy.md"


def commands() -> list[str]:
    """Every command of the page's bash blocks (continuation lines joined, comments dropped)."""
    found: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


def test_no_secret_or_output_is_copied_by_hand() -> None:
    for command in commands():
        assert not re.search(r"terraform\b.*\boutput\b.*>", command), command
        assert "keyvault secret show" not in command, command
        assert "--from-literal" not in command, command


def test_every_step_can_be_run_again() -> None:
    for command in commands():
        # `kubectl create` fails on a second run; apply (or a dry-run piped to apply) does not.
        if re.search(r"\bkubectl\b.*\bcreate\b", command):
            assert "--dry-run=client" in command and "kubectl apply" in command, command
        assert not re.search(r"\bhelm install\b", command), f"use helm upgrade --install: {command}"


def test_versions_are_pinned() -> None:
    for command in commands():
        if re.search(r"\bhelm upgrade --install\b", command):
            assert "--version" in command, command
        for url in re.findall(r"https://\S+", command):
            if "githubusercontent.com" in url or "github.com" in url:
                ref = url.split("/")[5] if "githubusercontent" in url else url.split("/")[6]
                assert ref not in ("main", "master", "HEAD"), url


def test_the_dev_cluster_is_created_from_a_pinned_config() -> None:
    [create] = [c for c in commands() if c.startswith("kind create cluster")]
    config = ROOT / shlex.split(create)[shlex.split(create).index("--config") + 1]
    cluster = yaml.safe_load(config.read_text())
    assert cluster["kind"] == "Cluster"
    for node in cluster["nodes"]:
        assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", node["image"])
    ingress = [c for c in commands() if "ingress-nginx" in c and c.startswith("kubectl apply")]
    assert ingress and all("provider/kind" in c for c in ingress)


def test_every_applied_path_exists() -> None:
    for command in commands():
        for flag, path in re.findall(r"(-k|-f) (k8s/\S+)", command):
            target = ROOT / path
            assert target.exists(), command
            if flag == "-k":
                assert (target / "kustomization.yaml").exists(), command


def test_the_walk_ends_signed_in() -> None:
    text = " ".join(DOC.read_text().split())
    # Terraform writes the overlay's files and the secrets are applied from them.
    assert "kubectl apply -k k8s/overlays/aks/secrets" in commands()
    assert "Sign in with Microsoft" in text and "keyvault-parley-gateway" in text
