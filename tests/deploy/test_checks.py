"""Broken copies of the real renderings: each check must report the fault it exists to catch
(and the unbroken rendering passes it: test_manifests.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from . import checks
from .kustomize import Doc

Mutation = Callable[[list[Doc]], None]


def _get(docs: list[Doc], kind: str, name: str) -> Doc:
    doc = checks.find(docs, kind, name)
    assert doc is not None, (kind, name)
    return doc


def _trigger_meta(docs: list[Doc], name: str) -> dict[str, str]:
    meta: dict[str, str] = _get(docs, "ScaledObject", name)["spec"]["triggers"][0]["metadata"]
    return meta


def _container(docs: list[Doc], name: str) -> Doc:
    container: Doc = checks.pod_spec(_get(docs, "Deployment", name))["containers"][0]
    return container


def queue_renamed(docs: list[Doc]) -> None:
    _trigger_meta(docs, "parley-ingest-worker")["queueName"] = "ingest"


def stream_renamed(docs: list[Doc]) -> None:
    _trigger_meta(docs, "parley-inference-worker")["stream"] = "parley-chat"


def wrong_backend(docs: list[Doc]) -> None:
    # dev keeps every queue on Redis; a Service Bus trigger would watch an empty queue.
    so = _get(docs, "ScaledObject", "parley-embed-worker")
    so["spec"]["minReplicaCount"] = 1
    so["spec"]["triggers"] = [
        {
            "type": "azure-servicebus",
            "metadata": {
                "queueName": "parley-embed",
                "messageCount": "2",
                "connectionFromEnv": "SB",
            },
        }
    ]


def target_not_concurrency(docs: list[Doc]) -> None:
    _trigger_meta(docs, "parley-embed-worker")["messageCount"] = "50"


def selector_misses_pods(docs: list[Doc]) -> None:
    dep = _get(docs, "Deployment", "parley-embed-worker")
    dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "embed"


def service_misses_pods(docs: list[Doc]) -> None:
    _get(docs, "Service", "parley-gateway")["spec"]["selector"]["app.kubernetes.io/component"] = (
        "gateways"
    )


def pdb_misses_pods(docs: list[Doc]) -> None:
    pdb = _get(docs, "PodDisruptionBudget", "parley-ingest-worker")
    pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "parlay"


def spread_misses_pods(docs: list[Doc]) -> None:
    spec = checks.pod_spec(_get(docs, "Deployment", "parley-gateway"))
    spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"] = {"app": "gateway"}


def network_policy_misses_pods(docs: list[Doc]) -> None:
    np = _get(docs, "NetworkPolicy", "chroma")
    np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] = "vectors"


def min_above_max(docs: list[Doc]) -> None:
    _get(docs, "ScaledObject", "parley-ingest-worker")["spec"]["minReplicaCount"] = 11


def redis_worker_to_zero(docs: list[Doc]) -> None:
    _get(docs, "ScaledObject", "parley-inference-worker")["spec"]["minReplicaCount"] = 0


def unknown_preset(docs: list[Doc]) -> None:
    _get(docs, "Workspace", "phi-4-mini")["inference"]["preset"]["name"] = "phi-5-mega-instruct"


def kaito_inference_set(docs: list[Doc]) -> None:
    # What the component used before: Kaito 0.12's InferenceSet, which the add-on does not serve.
    workspace = _get(docs, "Workspace", "phi-4-mini")
    docs.append({
        "apiVersion": "kaito.sh/v1beta1", "kind": "InferenceSet",
        "metadata": dict(workspace["metadata"]),
        "spec": {"replicas": 1, "labelSelector": {"matchLabels": {"apps": "phi-4-mini"}},
                 "template": {"resource": {"instanceType": "Standard_NC24ads_A100_v4"},
                              "inference": workspace["inference"]}},
    })
    docs.remove(workspace)


def kaito_in_restricted_namespace(docs: list[Doc]) -> None:
    _get(docs, "Workspace", "phi-4-mini")["metadata"]["namespace"] = "parley"


def gateway_pins_replicas(docs: list[Doc]) -> None:
    _get(docs, "Deployment", "parley-gateway")["spec"]["replicas"] = 2


def no_device_plugin(docs: list[Doc]) -> None:
    docs.remove(_get(docs, "DaemonSet", "nvidia-device-plugin"))


def device_plugin_elsewhere(docs: list[Doc]) -> None:
    checks.pod_spec(_get(docs, "DaemonSet", "nvidia-device-plugin"))["tolerations"] = []


def tls_secret_renamed(docs: list[Doc]) -> None:
    _get(docs, "Ingress", "parley-gateway")["spec"]["tls"][0]["secretName"] = "parley-gateway-tls"


def everything_public(docs: list[Doc]) -> None:
    ingress = _get(docs, "Ingress", "parley-gateway")
    ingress["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = "Prefix"


def chroma_on_zonal_disk(docs: list[Doc]) -> None:
    sts = _get(docs, "StatefulSet", "parley-chroma")
    sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] = "managed-csi-premium"


def unknown_metadata_key(docs: list[Doc]) -> None:
    # `queueLength` belongs to other scalers (azure-queue, rabbitmq), not azure-servicebus.
    _trigger_meta(docs, "parley-ingest-worker")["queueLength"] = "5"


def unknown_trigger_type(docs: list[Doc]) -> None:
    _get(docs, "ScaledObject", "parley-inference-worker")["spec"]["triggers"][0]["type"] = (
        "redis-stream"
    )


def namespace_missing(docs: list[Doc]) -> None:
    del _trigger_meta(docs, "parley-embed-worker")["namespace"]


def namespace_is_fqdn(docs: list[Doc]) -> None:
    _trigger_meta(docs, "parley-embed-worker")["namespace"] = "sb-x.servicebus.windows.net"


def count_not_a_number(docs: list[Doc]) -> None:
    _trigger_meta(docs, "parley-inference-worker")["streamLength"] = "eight"


def unknown_auth_parameter(docs: list[Doc]) -> None:
    auth = _get(docs, "TriggerAuthentication", "parley-redis")
    auth["spec"]["secretTargetRef"][1]["parameter"] = "redisPassword"


def worker_without_scaled_object(docs: list[Doc]) -> None:
    docs.remove(_get(docs, "ScaledObject", "parley-embed-worker"))


def worker_with_two_scaled_objects(docs: list[Doc]) -> None:
    twin = copy.deepcopy(_get(docs, "ScaledObject", "parley-embed-worker"))
    twin["metadata"]["name"] = "parley-embed-worker-2"
    docs.append(twin)


def scaled_object_without_target(docs: list[Doc]) -> None:
    _get(docs, "ScaledObject", "parley-ingest-worker")["spec"]["scaleTargetRef"]["name"] = "ingest"


def worker_pins_replicas(docs: list[Doc]) -> None:
    _get(docs, "Deployment", "parley-ingest-worker")["spec"]["replicas"] = 3


def grace_shorter_than_drain(docs: list[Doc]) -> None:
    checks.pod_spec(_get(docs, "Deployment", "parley-embed-worker"))[
        "terminationGracePeriodSeconds"
    ] = 20


def no_readiness_probe(docs: list[Doc]) -> None:
    del _container(docs, "parley-inference-worker")["readinessProbe"]


def liveness_asks_readyz(docs: list[Doc]) -> None:
    _container(docs, "parley-gateway")["livenessProbe"]["httpGet"]["path"] = "/readyz"


def probe_on_missing_port(docs: list[Doc]) -> None:
    _container(docs, "parley-ingest-worker")["startupProbe"]["httpGet"]["port"] = "http"


def writable_root(docs: list[Doc]) -> None:
    _container(docs, "parley-gateway")["securityContext"]["readOnlyRootFilesystem"] = False


def no_limits(docs: list[Doc]) -> None:
    del _container(docs, "parley-embed-worker")["resources"]["limits"]


def identity_without_client_id(docs: list[Doc]) -> None:
    del _get(docs, "ServiceAccount", "parley-embed")["metadata"]["annotations"]


def deployment_without_pdb(docs: list[Doc]) -> None:
    docs.remove(_get(docs, "PodDisruptionBudget", "parley-maintenance-beat"))


def small_uploads(docs: list[Doc]) -> None:
    ingress = _get(docs, "Ingress", "parley-gateway")
    ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] = "10m"


def short_stream_timeout(docs: list[Doc]) -> None:
    ingress = _get(docs, "Ingress", "parley-gateway")
    ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] = "60"


def sticky_sessions(docs: list[Doc]) -> None:
    ingress = _get(docs, "Ingress", "parley-gateway")
    ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"] = "cookie"


def unknown_pod_field(docs: list[Doc]) -> None:
    checks.pod_spec(_get(docs, "Deployment", "parley-gateway"))["containers"][0][
        "livenessprobe"
    ] = {}


def wrong_type_in_builtin(docs: list[Doc]) -> None:
    _get(docs, "HorizontalPodAutoscaler", "parley-gateway")["spec"]["maxReplicas"] = "ten"


def unknown_scaled_object_field(docs: list[Doc]) -> None:
    _get(docs, "ScaledObject", "parley-ingest-worker")["spec"]["minReplicas"] = 0


def workspace_field_misplaced(docs: list[Doc]) -> None:
    # A Workspace keeps `resource` and `inference` at the top, with no `spec`.
    workspace = _get(docs, "Workspace", "phi-4-mini")
    workspace["spec"] = {"resource": workspace.pop("resource")}


def unknown_kind(docs: list[Doc]) -> None:
    docs.append(
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledQueue",
            "metadata": {"name": "x", "namespace": "parley"},
            "spec": {},
        }
    )


CASES: list[tuple[str, Mutation, str, str]] = [
    ("aks", queue_renamed, "queues", "queueName 'ingest' != the code's 'parley-ingest'"),
    ("dev", stream_renamed, "queues", "stream 'parley-chat' != the code's 'parley:q:parley-chat'"),
    ("dev", wrong_backend, "queues", "parley-embed is on redis"),
    ("aks", target_not_concurrency, "queues", "messageCount 50 != concurrency 2"),
    ("dev", selector_misses_pods, "selectors", "selector does not match its pod labels"),
    ("dev", service_misses_pods, "selectors", "Service parley-gateway: selector matches no pod"),
    ("aks", pdb_misses_pods, "selectors", "PodDisruptionBudget parley-ingest-worker: selector"),
    ("aks", spread_misses_pods, "selectors", "topology spread selector misses its own pods"),
    ("dev", network_policy_misses_pods, "selectors", "NetworkPolicy chroma: podSelector"),
    ("aks", min_above_max, "replica_bounds", "minReplicaCount 11 > maxReplicaCount 10"),
    ("aks", redis_worker_to_zero, "replica_bounds", "must keep one replica"),
    ("aks+kaito", unknown_preset, "kaito", "'phi-5-mega-instruct' is not in Kaito's supported"),
    (
        "aks",
        unknown_metadata_key,
        "keda_triggers",
        "azure-servicebus has no metadata key 'queueLength'",
    ),
    ("dev", unknown_trigger_type, "keda_triggers", "trigger type 'redis-stream'"),
    ("aks", namespace_missing, "keda_triggers", "needs metadata.namespace"),
    ("aks", namespace_is_fqdn, "keda_triggers", "namespace is the name, not the FQDN"),
    ("aks", count_not_a_number, "keda_triggers", "streamLength='eight' is not a number"),
    ("aks", unknown_auth_parameter, "keda_triggers", "takes no parameter 'redisPassword'"),
    ("aks", worker_without_scaled_object, "scaled_objects", "parley-embed-worker: 0 ScaledObjects"),
    ("dev", worker_with_two_scaled_objects, "scaled_objects", "2 ScaledObjects (want exactly one)"),
    ("aks", scaled_object_without_target, "scaled_objects", "target Deployment ingest is not"),
    ("aks", worker_pins_replicas, "scaled_objects", "sets replicas"),
    ("aks", grace_shorter_than_drain, "pods", "grace 20s does not exceed the drain 25.0s"),
    ("dev", no_readiness_probe, "pods", "no readinessProbe"),
    ("aks", liveness_asks_readyz, "pods", "livenessProbe should ask /healthz"),
    ("aks", probe_on_missing_port, "pods", "startupProbe uses port 'http'"),
    ("dev", writable_root, "pods", "writable root filesystem"),
    ("aks", no_limits, "pods", "no cpu/memory limits"),
    ("aks", identity_without_client_id, "pods", "workload identity without a client-id"),
    ("aks", deployment_without_pdb, "selectors", "parley-maintenance-beat: no PodDisruptionBudget"),
    ("aks", small_uploads, "ingress", "body size 10m"),
    ("dev", short_stream_timeout, "ingress", "proxy-read-timeout 60s cuts slow streams"),
    ("aks", sticky_sessions, "ingress", "session affinity is not needed"),
    ("aks", unknown_pod_field, "schemas", "'livenessprobe' was unexpected"),
    (
        "aks",
        wrong_type_in_builtin,
        "schemas",
        "HorizontalPodAutoscaler parley-gateway: spec/maxReplicas",
    ),
    ("aks", unknown_scaled_object_field, "schemas", "'minReplicas' was unexpected"),
    ("aks+kaito", workspace_field_misplaced, "schemas", "'spec' was unexpected"),
    ("aks+kaito", kaito_inference_set, "kaito", "is not served by the AKS add-on's Kaito"),
    ("aks+kaito", kaito_in_restricted_namespace, "kaito", "enforces Pod Security 'restricted'"),
    ("aks", gateway_pins_replicas, "scaled_objects", "parley-gateway: sets replicas"),
    ("aks+gpu-embed", no_device_plugin, "gpu", "no NVIDIA device plugin runs"),
    ("aks+gpu-embed", device_plugin_elsewhere, "gpu", "no NVIDIA device plugin runs"),
    ("aks", tls_secret_renamed, "tls", "syncs the certificate into 'keyvault-parley-gateway'"),
    ("dev", everything_public, "public_paths", "/metrics is reachable from outside"),
    ("aks", chroma_on_zonal_disk, "storage", "'managed-csi-premium' (a built-in zonal class)"),
    ("dev", unknown_kind, "schemas", "no schema for ('keda.sh/v1alpha1', 'ScaledQueue')"),
]


@pytest.mark.parametrize(
    ("variant", "mutation", "check", "expected"), CASES, ids=[c[1].__name__ for c in CASES]
)
def test_check_reports_the_fault(
    rendered: dict[str, list[Doc]], variant: str, mutation: Mutation, check: str, expected: str
) -> None:
    docs = copy.deepcopy(rendered[variant])
    mutation(docs)
    found = dict(checks.all_checks(docs))[check]
    assert any(expected in problem for problem in found), found
