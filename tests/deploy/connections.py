"""Every network connection Parley's processes make, in one place, and where each one goes in a
rendering of ``k8s/``.

:data:`USES` is the list: for each component (the ``app.kubernetes.io/component`` label of its
pods), the backends its code connects to, each with the condition on the component's own
settings under which it does (a worker on the Redis broker opens no Service Bus link; an embed
worker with the local model calls no Azure OpenAI). :func:`clients` lists what reaches Parley's
pods from elsewhere in the cluster (the ingress controller, Prometheus, KEDA). The NetworkPolicies
must allow exactly these paths, both directions: ``test_reachability.py`` evaluates them with
:mod:`tests.deploy.netpol` and fails on a missing or an unneeded path.

Where a connection goes is read from the same settings: an in-cluster URL
(``http://parley-chroma.parley.svc.cluster.local:8000``) resolves through the rendered Service to
the pods it selects and their container port; anything else is outside the cluster, on the port
of its protocol (HTTPS 443, AMQP over TLS 5671, Azure Managed Redis's TLS port from the URL).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from parley.settings import BrokerBackend, Settings


class Backend(StrEnum):
    REDIS = "Redis"
    CHROMA = "Chroma"
    SERVICE_BUS = "Service Bus"
    STORAGE = "Blob Storage"
    AZURE_OPENAI = "Azure OpenAI"
    ENTRA = "Entra ID (signing keys)"
    ENTRA_TOKENS = "Entra ID (workload identity tokens)"
    CHAT_ENDPOINT = "OpenAI-compatible chat endpoint (Kaito/vLLM)"
    MODEL_WEIGHTS = "model weights (HTTPS)"
    DNS = "DNS"


Condition = Callable[[Settings], bool]


def always(_: Settings) -> bool:
    return True


def _on_service_bus(*queues: str) -> Condition:
    def check(s: Settings) -> bool:
        return any(getattr(s.queues, q).backend is BrokerBackend.SERVICEBUS for q in queues)

    return check


def _blob_store(s: Settings) -> bool:
    return s.blob_backend == "azure"


def _embeds_on_azure(s: Settings) -> bool:
    return s.embedder == "azure-openai"


def _chats_on_azure(s: Settings) -> bool:
    return s.chat_backend == "azure-openai"


def _chats_on_endpoint(s: Settings) -> bool:
    return s.chat_backend == "openai-compatible"


def _entra(s: Settings) -> bool:
    return bool(s.entra_tenant_id and s.entra_audience)


def _azure_identity(*queues: str, blobs: bool = False, openai: str = "") -> Condition:
    """Whether the component signs in to Azure as its workload identity (a token from Entra ID
    over HTTPS) for one of the backends it uses without a key: Service Bus on a namespace,
    Blob Storage on an account URL, Azure OpenAI without an API key (``openai``: "embed" or
    "chat", the use that calls it)."""

    def check(s: Settings) -> bool:
        bus = _on_service_bus(*queues)(s) and s.servicebus_connection_string is None
        store = blobs and _blob_store(s) and s.blob_connection_string is None
        model = (
            (openai == "embed" and _embeds_on_azure(s)) or (openai == "chat" and _chats_on_azure(s))
        ) and s.azure_openai_api_key is None
        return bus or store or model

    return check


# component -> backend -> when its code connects there (its own settings decide).
USES: dict[str, dict[Backend, Condition]] = {
    # Turns and token streams (Redis), retrieval (Chroma, and the question's embedding), the
    # document API (blobs; a retry re-sends the ingest request), Entra ID's signing keys.
    "gateway": {
        Backend.REDIS: always,
        Backend.CHROMA: always,
        Backend.STORAGE: _blob_store,
        Backend.SERVICE_BUS: _on_service_bus("ingest"),
        Backend.AZURE_OPENAI: _embeds_on_azure,
        Backend.ENTRA: _entra,
        Backend.ENTRA_TOKENS: _azure_identity("ingest", blobs=True, openai="embed"),
        Backend.DNS: always,
    },
    # Status records (Redis), old chunks deleted from Chroma (it opens Chroma at start), the
    # blob it reads, its queue and the embed queue it sends to.
    "ingest-worker": {
        Backend.REDIS: always,
        Backend.CHROMA: always,
        Backend.STORAGE: _blob_store,
        Backend.SERVICE_BUS: _on_service_bus("ingest", "embed"),
        Backend.ENTRA_TOKENS: _azure_identity("ingest", "embed", blobs=True),
        Backend.DNS: always,
    },
    "embed-worker": {
        Backend.REDIS: always,
        Backend.CHROMA: always,
        Backend.SERVICE_BUS: _on_service_bus("embed"),
        Backend.AZURE_OPENAI: _embeds_on_azure,
        Backend.ENTRA_TOKENS: _azure_identity("embed", openai="embed"),
        Backend.DNS: always,
    },
    "inference-worker": {
        Backend.REDIS: always,
        Backend.AZURE_OPENAI: _chats_on_azure,
        Backend.CHAT_ENDPOINT: _chats_on_endpoint,
        Backend.ENTRA_TOKENS: _azure_identity(openai="chat"),
        Backend.DNS: always,
    },
    # Celery's broker and the sweeps' leases (Redis); reconcile lists blobs and re-emits events;
    # dead-letter replay on both queues; re-embedding reads and writes Chroma.
    "maintenance-worker": {
        Backend.REDIS: always,
        Backend.CHROMA: always,
        Backend.STORAGE: _blob_store,
        Backend.SERVICE_BUS: _on_service_bus("ingest", "embed"),
        Backend.AZURE_OPENAI: _embeds_on_azure,
        Backend.ENTRA_TOKENS: _azure_identity("ingest", "embed", blobs=True, openai="embed"),
        Backend.DNS: always,
    },
    "maintenance-beat": {Backend.REDIS: always, Backend.DNS: always},
    # Chroma calls nothing; the dev backends neither.
    "chroma": {Backend.DNS: always},
    "redis": {Backend.DNS: always},
    "azurite": {Backend.DNS: always},
    # Kaito's vLLM pods pull the model's weights (OCI artifacts) when they start.
    "kaito-vllm": {Backend.MODEL_WEIGHTS: always, Backend.DNS: always},
}


@dataclass(frozen=True)
class Actor:
    """Something outside Parley's namespaces that takes part in a connection."""

    name: str
    namespace: str
    labels: Mapping[str, str]


KUBE_DNS = Actor("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
# AKS's managed NGINX (application routing) runs in app-routing-system; ingress-nginx's own
# manifests (dev clusters) in ingress-nginx.
INGRESS_AKS = Actor("ingress controller", "app-routing-system", {"app": "nginx"})
INGRESS_DEV = Actor(
    "ingress controller", "ingress-nginx", {"app.kubernetes.io/component": "controller"}
)
# Azure Managed Prometheus's collectors (ama-metrics) run in kube-system; so does KEDA's add-on.
PROMETHEUS_AKS = Actor("Managed Prometheus", "kube-system", {"rsName": "ama-metrics"})
KEDA_AKS = Actor("KEDA", "kube-system", {"app": "keda-operator"})
KEDA_DEV = Actor("KEDA", "keda", {"app": "keda-operator"})


@dataclass(frozen=True)
class Client:
    """An actor that connects to Parley pods: to every pod whose component is listed, on the
    named container port."""

    actor: Actor
    components: frozenset[str]
    port_name: str
    why: str


def clients(variant_is_aks: bool, in_cluster_redis: bool, scraped: bool) -> list[Client]:
    """What reaches Parley's pods from the rest of the cluster, for one kind of cluster."""
    found = [
        Client(
            INGRESS_AKS if variant_is_aks else INGRESS_DEV,
            frozenset({"gateway"}),
            "http",
            "users, through the ingress",
        )
    ]
    if scraped:
        found.append(Client(PROMETHEUS_AKS, frozenset({"gateway"}), "http", "scrapes /metrics"))
        found.append(
            Client(
                PROMETHEUS_AKS,
                frozenset({"ingest-worker", "embed-worker", "inference-worker"}),
                "metrics",
                "scrapes /metrics",
            )
        )
        found.append(
            Client(PROMETHEUS_AKS, frozenset({"kaito-vllm"}), "http", "scrapes vLLM's /metrics")
        )
    if in_cluster_redis:
        found.append(
            Client(
                KEDA_AKS if variant_is_aks else KEDA_DEV,
                frozenset({"redis"}),
                "redis",
                "reads stream lengths",
            )
        )
    return found


# Ports of the Azure services, outside the cluster.
HTTPS = 443
AMQPS = 5671


def external_port(backend: Backend, settings: Settings) -> int | None:
    """The port a backend outside the cluster is reached on (None: it is not outside)."""
    https = (Backend.AZURE_OPENAI, Backend.ENTRA, Backend.ENTRA_TOKENS, Backend.MODEL_WEIGHTS)
    if backend in https:
        return HTTPS
    if backend is Backend.SERVICE_BUS:
        return AMQPS
    if backend is Backend.STORAGE:
        url = settings.blob_account_url or _blob_endpoint(settings)
        return None if url is None or in_cluster_host(url) else _port(url)
    if backend is Backend.REDIS:
        return None if in_cluster_host(settings.redis_url) else _port(settings.redis_url)
    return None


def in_cluster_url(backend: Backend, settings: Settings) -> str | None:
    """The in-cluster URL a backend is reached at, if it is in the cluster."""
    url = {
        Backend.REDIS: settings.redis_url,
        Backend.CHROMA: settings.chroma_url,
        Backend.CHAT_ENDPOINT: settings.chat_base_url,
        Backend.STORAGE: settings.blob_account_url or _blob_endpoint(settings),
    }.get(backend)
    return url if url and in_cluster_host(url) else None


def in_cluster_host(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host.endswith(".svc.cluster.local") or host.endswith(".svc") or "." not in host


def service_of(url: str, client_namespace: str) -> tuple[str, str, int]:
    """``http://name.ns.svc.cluster.local:8000`` -> (name, namespace, service port)."""
    parts = urlsplit(url)
    labels = (parts.hostname or "").split(".")
    namespace = labels[1] if len(labels) > 1 else client_namespace
    return labels[0], namespace, _port(url)


def _port(url: str) -> int:
    parts = urlsplit(url)
    if parts.port:
        return parts.port
    return {"https": 443, "rediss": 6380, "redis": 6379}.get(parts.scheme, 80)


def _blob_endpoint(settings: Settings) -> str | None:
    if settings.blob_connection_string is None:
        return None
    for item in settings.blob_connection_string.get_secret_value().split(";"):
        key, _, value = item.partition("=")
        if key == "BlobEndpoint":
            return value
    return None
