"""Every rendering of k8s/ passes every check, and carries what the deploy issue asks for."""

from __future__ import annotations

import tomllib

import pytest

from chat_gateway import auth
from parley.settings import BrokerBackend, Settings

from . import checks
from .conftest import ROOT, VARIANTS
from .kustomize import Doc


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_check_passes(rendered: dict[str, list[Doc]], variant: str) -> None:
    failures = {name: found for name, found in checks.all_checks(rendered[variant]) if found}
    assert failures == {}


def _trigger(docs: list[Doc], scaled_object: str) -> Doc:
    so = checks.find(docs, "ScaledObject", scaled_object)
    assert so is not None, scaled_object
    [trigger] = so["spec"]["triggers"]
    return dict(trigger)


def test_dev_scales_every_queue_on_redis_streams(rendered: dict[str, list[Doc]]) -> None:
    docs, settings = rendered["dev"], Settings()
    for worker, queue in [
        ("ingest", settings.queues.ingest),
        ("embed", settings.queues.embed),
        ("inference", settings.queues.chat),
    ]:
        trigger = _trigger(docs, f"parley-{worker}-worker")
        assert trigger["type"] == "redis-streams"
        assert trigger["metadata"]["stream"] == settings.keys.queue(queue.name)


def test_aks_scales_ingest_and_embed_on_service_bus_and_chat_on_redis(
    rendered: dict[str, list[Doc]],
) -> None:
    docs, defaults = rendered["aks"], Settings()
    ingest = _trigger(docs, "parley-ingest-worker")
    embed = _trigger(docs, "parley-embed-worker")
    chat = _trigger(docs, "parley-inference-worker")
    assert (ingest["type"], ingest["metadata"]["queueName"]) == (
        "azure-servicebus",
        defaults.queues.ingest.name,
    )
    assert (embed["type"], embed["metadata"]["queueName"]) == (
        "azure-servicebus",
        defaults.queues.embed.name,
    )
    assert chat["type"] == "redis-streams"
    assert chat["metadata"]["stream"] == "parley:q:parley-chat"
    auth = checks.find(docs, "TriggerAuthentication", ingest["authenticationRef"]["name"])
    assert auth is not None and auth["spec"]["podIdentity"]["provider"] == "azure-workload"
    # Service Bus queues may sleep at zero; the chat worker never does.
    for name, low in [
        ("parley-ingest-worker", 0),
        ("parley-embed-worker", 0),
        ("parley-inference-worker", 1),
    ]:
        so = checks.find(docs, "ScaledObject", name)
        assert so is not None and so["spec"]["minReplicaCount"] == low


def test_aks_environment_gives_the_code_service_bus_backends(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["aks"]
    worker = checks.find(docs, "Deployment", "parley-ingest-worker")
    assert worker is not None
    settings = checks.settings_for(checks.env_of(docs, worker))
    assert settings.queues.ingest.backend == BrokerBackend.SERVICEBUS
    assert settings.queues.embed.backend == BrokerBackend.SERVICEBUS
    assert settings.queues.chat.backend == BrokerBackend.REDIS
    assert settings.queues.ingest.name == "parley-ingest"
    assert settings.blob_backend == "azure" and settings.embedder == "azure-openai"


def test_aks_pods_use_their_own_workload_identity(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["aks"]
    client_ids = set()
    for dep in checks.of_kind(docs, "Deployment"):
        assert checks.pod_labels(dep)["azure.workload.identity/use"] == "true"
        account = checks.find(docs, "ServiceAccount", checks.pod_spec(dep)["serviceAccountName"])
        assert account is not None
        client_ids.add(account["metadata"]["annotations"]["azure.workload.identity/client-id"])
    # gateway, ingest, embed, inference, maintenance (worker and beat share one)
    assert len(client_ids) == 5


def test_kaito_component_serves_a_supported_preset_in_its_own_namespace(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["aks+kaito"]
    [workspace] = checks.of_kind(docs, "Workspace")
    assert workspace["apiVersion"] == "kaito.sh/v1beta1"
    assert workspace["inference"]["preset"]["name"] in checks.kaito_presets()
    namespace = checks.find(docs, "Namespace", workspace["metadata"]["namespace"])
    assert namespace is not None and namespace["metadata"]["name"] != "parley"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    worker = checks.find(docs, "Deployment", "parley-inference-worker")
    assert worker is not None
    settings = checks.settings_for(checks.env_of(docs, worker))
    assert settings.chat_backend == "openai-compatible"
    # vLLM serves a Workspace's preset under the preset's name.
    assert settings.chat_model == workspace["inference"]["preset"]["name"]
    assert settings.chat_base_url == "http://parley-llm.parley-llm.svc.cluster.local/v1"


def test_images_carry_the_project_version(rendered: dict[str, list[Doc]]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for variant in ("aks", "aks+gpu-embed"):
        for wl in checks.of_kind(rendered[variant], *checks.WORKLOAD_KINDS):
            image = checks.pod_spec(wl)["containers"][0]["image"]
            expected = (
                f"{version}-gpu"
                if (variant == "aks+gpu-embed" and wl["metadata"]["name"] == "parley-embed-worker")
                else version
            )
            assert image == f"crparleyexample.azurecr.io/parley:{expected}", wl["metadata"]["name"]


CLUSTER_SCOPED = ("Namespace", "StorageClass")
ELSEWHERE = {
    ("ConfigMap", "ama-metrics-prometheus-config"): "kube-system",
    ("DaemonSet", "nvidia-device-plugin"): "kube-system",
}


def test_everything_lives_in_parleys_namespaces(rendered: dict[str, list[Doc]]) -> None:
    for variant, docs in rendered.items():
        for doc in docs:
            if doc["kind"] in CLUSTER_SCOPED:
                continue
            where = doc["metadata"].get("namespace")
            expected = ELSEWHERE.get((doc["kind"], doc["metadata"]["name"]), "parley")
            if where == "parley-llm":
                expected = "parley-llm"  # Kaito's model (components/kaito-inference)
            assert where == expected, (variant, checks.ident(doc))


def test_network_policies_deny_by_default(rendered: dict[str, list[Doc]]) -> None:
    for docs in rendered.values():
        deny = checks.find(docs, "NetworkPolicy", "default-deny")
        assert deny is not None
        assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


EMBEDDING_USERS = ("parley-gateway", "parley-ingest-worker", "parley-embed-worker",
                   "parley-maintenance-worker")


def embedding_model(settings: Settings) -> tuple[str, ...]:
    """What decides the vectors (and the collection): the model, not the device it runs on."""
    if settings.embedder == "azure-openai":
        return ("azure-openai", str(settings.azure_openai_embedding_deployment),
                str(settings.azure_openai_embedding_dimensions))
    return ("local",)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_component_that_embeds_uses_one_model(
    rendered: dict[str, list[Doc]], variant: str
) -> None:
    # A gateway embedding questions with another model than the embed worker's would search a
    # collection nobody fills.
    docs = rendered[variant]
    models = {}
    for name in EMBEDDING_USERS:
        workload = checks.find(docs, "Deployment", name)
        assert workload is not None, name
        models[name] = embedding_model(checks.settings_for(checks.env_of(docs, workload)))
    assert len(set(models.values())) == 1, models
    if variant == "aks+gpu-embed":
        embed = checks.find(docs, "Deployment", "parley-embed-worker")
        assert embed is not None
        assert checks.settings_for(checks.env_of(docs, embed)).embed_device == "cuda"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_gateway_starts_with_its_sign_in_settings(
    deployed: dict[str, list[Doc]], variant: str
) -> None:
    # The gateway's own startup rule (chat_gateway.auth.problems) on the environment its pod gets.
    docs = deployed[variant]
    gateway = checks.find(docs, "Deployment", "parley-gateway")
    assert gateway is not None
    settings = checks.settings_for(checks.env_of(docs, gateway))
    assert [p.message for p in auth.problems(settings)] == []
    if variant.startswith("aks"):
        # Entra ID only: tenant, audience and the portal's client id; no local token at all.
        assert settings.entra_tenant_id and settings.entra_audience and settings.entra_client_id
        assert auth.parse_pairs(settings.local_tokens.get_secret_value()) == {}
        assert auth.portal_config(settings)["entra"] is not None
