"""The NetworkPolicies of every rendering allow exactly the connections Parley makes
(tests/deploy/connections.py), both directions, and the check fails on a missing or an extra
path."""

from __future__ import annotations

import copy

import pytest

from . import checks
from .conftest import VARIANTS
from .kustomize import Doc
from .reachability import check_reachability


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_policies_allow_exactly_the_connections_the_code_makes(
    deployed: dict[str, list[Doc]], variant: str
) -> None:
    assert check_reachability(deployed[variant]) == []


def _policy(docs: list[Doc], name: str) -> Doc:
    found = checks.find(docs, "NetworkPolicy", name)
    assert found is not None, name
    return found


def test_ingest_worker_without_chroma_is_a_missing_path(deployed: dict[str, list[Doc]]) -> None:
    docs = copy.deepcopy(deployed["aks"])
    for name in ("chroma-clients", "chroma"):
        policy = _policy(docs, name)
        selector = (
            policy["spec"]["podSelector"]
            if name == "chroma-clients"
            else (policy["spec"]["ingress"][0]["from"][0]["podSelector"])
        )
        selector["matchExpressions"][0]["values"].remove("ingest-worker")
    found = check_reachability(docs)
    assert "missing egress: parley/ingest-worker -> parley/chroma:8000/TCP" in " ".join(found)
    assert any(
        p.startswith("missing ingress: parley/ingest-worker -> parley/chroma") for p in found
    )


def test_a_broader_rule_is_an_unneeded_path(deployed: dict[str, list[Doc]]) -> None:
    docs = copy.deepcopy(deployed["aks"])
    # Give the maintenance beat (it talks to Redis only) Service Bus too.
    _policy(docs, "azure-servicebus")["spec"]["podSelector"]["matchExpressions"][0][
        "values"
    ].append("maintenance-beat")
    assert check_reachability(docs) == [
        "unneeded egress: parley/maintenance-beat -> internet:5671/TCP"
    ]


def test_an_ingress_open_to_a_namespace_is_an_unneeded_path(
    deployed: dict[str, list[Doc]],
) -> None:
    docs = copy.deepcopy(deployed["dev"])
    _policy(docs, "gateway")["spec"]["ingress"][0]["from"].append(
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "default"}}}
    )
    assert check_reachability(docs) == [
        "unneeded ingress: default/stranger -> parley/gateway:8080/TCP"
    ]


def test_kaito_reached_from_the_inference_worker_only(deployed: dict[str, list[Doc]]) -> None:
    docs = copy.deepcopy(deployed["aks+kaito"])
    docs.remove(_policy(docs, "inference-to-kaito"))
    found = check_reachability(docs)
    assert found == [
        "missing egress: parley/inference-worker -> parley-llm/phi-4-mini:5000/TCP"
        " (inference-worker uses OpenAI-compatible chat endpoint (Kaito/vLLM))"
    ]


def test_service_bus_through_workload_identity_needs_entra_over_https(
    deployed: dict[str, list[Doc]],
) -> None:
    # With the GPU embedder the embed worker calls no Azure OpenAI, but it still signs in to
    # Service Bus as its workload identity: a token from Entra ID over HTTPS.
    docs = copy.deepcopy(deployed["aks+gpu-embed"])
    _policy(docs, "azure-https")["spec"]["podSelector"]["matchExpressions"][0]["values"].remove(
        "embed-worker"
    )
    assert check_reachability(docs) == [
        "missing egress: parley/embed-worker -> internet:443/TCP"
        " (embed-worker uses Entra ID (workload identity tokens))"
    ]
