"""Checks of rendered Kubernetes manifests, as pure functions: each takes the documents (and what
it compares them with) and returns a list of problems, empty when all is well. The tests run them
on every rendering of ``k8s/`` and on broken copies, to prove each check can fail.

What the schemas cannot say is checked here: KEDA trigger types and metadata keys (from KEDA's
scaler sources, v2.20), replica bounds (a CEL rule in the CRD), Kaito presets, selectors against
pod labels, one ScaledObject per queue worker, queue names and targets against the code's
settings, and the pod hygiene the deploy issue asks for.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import jsonschema
import kubernetes_validate
import yaml

from parley.settings import BrokerBackend, QueueSettings, Settings
from tests.deploy.netpol import selector_matches as matches

Doc = dict[str, Any]

K8S_VERSION = "1.34"  # the AKS version infra/ pins (variables.tf kubernetes_version)
CRD_DIR = Path(__file__).parent / "crds"
# `python -m <module>` -> the logical queue it consumes.
QUEUE_OF_MODULE = {"ingest_worker": "ingest", "embed_worker": "embed", "inference_worker": "chat"}
PARLEY_MODULES = {*QUEUE_OF_MODULE, "chat_gateway"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


@dataclass(frozen=True)
class Scaler:
    """What KEDA's scaler reads: trigger metadata keys, TriggerAuthentication parameters."""

    metadata: frozenset[str]
    auth_params: frozenset[str]
    numeric: frozenset[str]


# Keys from the `keda:"name=..."` tags of pkg/scalers/{azure_servicebus,redis_streams,
# prometheus}_scaler.go (+ redisConnectionInfo and Azure cloud keys) at KEDA v2.20.
SCALERS = {
    "azure-servicebus": Scaler(
        metadata=frozenset(
            {
                "queueName",
                "topicName",
                "subscriptionName",
                "namespace",
                "connectionFromEnv",
                "messageCount",
                "activationMessageCount",
                "useRegex",
                "operation",
                "cloud",
                "endpointSuffix",
            }
        ),
        auth_params=frozenset({"connection"}),
        numeric=frozenset({"messageCount", "activationMessageCount"}),
    ),
    "redis-streams": Scaler(
        metadata=frozenset(
            {
                "address",
                "addressFromEnv",
                "host",
                "hostFromEnv",
                "port",
                "portFromEnv",
                "username",
                "usernameFromEnv",
                "passwordFromEnv",
                "databaseIndex",
                "enableTLS",
                "unsafeSsl",
                "stream",
                "consumerGroup",
                "pendingEntriesCount",
                "streamLength",
                "lagCount",
                "activationLagCount",
            }
        ),
        auth_params=frozenset(
            {
                "address",
                "host",
                "port",
                "username",
                "password",
                "tls",
                "ca",
                "cert",
                "key",
            }
        ),
        numeric=frozenset(
            {
                "databaseIndex",
                "pendingEntriesCount",
                "streamLength",
                "lagCount",
                "activationLagCount",
            }
        ),
    ),
    "prometheus": Scaler(
        metadata=frozenset(
            {
                "serverAddress",
                "query",
                "queryParameters",
                "threshold",
                "activationThreshold",
                "namespace",
                "customHeaders",
                "ignoreNullValues",
                "unsafeSsl",
                "awsRegion",
                "timeout",
                "identityOwner",
                "authModes",
            }
        ),
        auth_params=frozenset(
            {
                "bearerToken",
                "username",
                "password",
                "ca",
                "cert",
                "key",
                "customAuthHeader",
                "customAuthValue",
            }
        ),
        numeric=frozenset({"threshold", "activationThreshold"}),
    ),
}


# --- helpers ----------------------------------------------------------------------------------
def ident(doc: Doc) -> str:
    return f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"


def of_kind(docs: list[Doc], *kinds: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") in kinds]


def find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    return next((d for d in of_kind(docs, kind) if d["metadata"]["name"] == name), None)


def pod_spec(doc: Doc) -> Doc:
    """The workload's pod spec itself (not a copy)."""
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def pod_labels(doc: Doc) -> dict[str, str]:
    return dict(doc["spec"]["template"]["metadata"].get("labels") or {})


def module_of(doc: Doc) -> str | None:
    """The `python -m X` module a workload runs, if it runs one."""
    for container in pod_spec(doc)["containers"]:
        command = list(container.get("command") or [])
        if command[:2] == ["python", "-m"] and len(command) > 2:
            return str(command[2])
    return None


def runs_parley(doc: Doc) -> bool:
    commands = [list(c.get("command") or []) for c in pod_spec(doc)["containers"]]
    return any(
        (cmd[:2] == ["python", "-m"] and cmd[2:3] and cmd[2] in PARLEY_MODULES)
        or cmd[:3] == ["python", "-m", "maintenance_worker"]
        for cmd in commands
    )


def pod_label_sets(docs: list[Doc]) -> list[dict[str, str]]:
    """Labels of every pod the rendering creates, including Kaito's vLLM pods, which carry
    ``kaito.sh/workspace=<Workspace>``."""
    sets = [pod_labels(d) for d in of_kind(docs, *WORKLOAD_KINDS, "DaemonSet")]
    sets += [{"kaito.sh/workspace": d["metadata"]["name"]} for d in of_kind(docs, "Workspace")]
    return sets


def env_of(docs: list[Doc], workload: Doc) -> dict[str, str]:
    """The environment the workload's first container starts with (ConfigMaps and Secrets in
    envFrom order, then its own env values)."""
    env: dict[str, str] = {}
    container = pod_spec(workload)["containers"][0]
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            ref = source["configMapRef"]
            cm = find(docs, "ConfigMap", ref["name"])
            if cm is not None:
                env.update(cm.get("data") or {})
        elif "secretRef" in source:
            secret = find(docs, "Secret", source["secretRef"]["name"])
            if secret is not None:
                env.update(
                    {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
                )
                env.update(secret.get("stringData") or {})
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
    return env


def settings_for(env: Mapping[str, str]) -> Settings:
    """Parley's settings as that environment makes them (the code's own parsing)."""
    with mock.patch.dict(os.environ, dict(env), clear=True):
        return Settings()


# --- schemas ----------------------------------------------------------------------------------
@cache
def crd_schemas() -> dict[tuple[str, str], Doc]:
    """(apiVersion, kind) -> the CRD's openAPIV3 schema, made strict like the API server's
    field validation (unknown fields are errors unless the schema preserves them)."""
    schemas: dict[tuple[str, str], Doc] = {}
    for path in sorted(CRD_DIR.glob("*.sh_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        for value in node.values():
            _strict(value)
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
    elif isinstance(node, list):
        for item in node:
            _strict(item)
    return node


def check_schemas(docs: list[Doc], version: str = K8S_VERSION) -> list[str]:
    """Built-in kinds against Kubernetes' own schemas (strict: unknown fields fail), custom
    resources against their CRD's schema."""
    problems: list[str] = []
    for doc in docs:
        problems += _schema_problems(json.dumps(doc, sort_keys=True), version)
    return problems


@cache
def _schema_problems(text: str, version: str) -> tuple[str, ...]:
    # Keyed on the document's text: a test that breaks one document revalidates only that one.
    doc = json.loads(text)
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key in crd_schemas():
        validator = jsonschema.Draft7Validator(crd_schemas()[key])
        return tuple(
            f"{ident(doc)}: {'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
            for error in validator.iter_errors(doc)
        )
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return (f"{ident(doc)}: no schema for {key} (unknown kind or CRD not vendored)",)
    except kubernetes_validate.ValidationError as error:
        return (f"{ident(doc)}: {'/'.join(str(p) for p in error.path)}: {error.message}",)
    return ()


# --- KEDA ---------------------------------------------------------------------------------------
def check_keda_triggers(docs: list[Doc]) -> list[str]:
    """Trigger types and metadata keys KEDA's scalers know; required keys; numbers parse."""
    problems: list[str] = []
    for so in of_kind(docs, "ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            kind, meta = trigger["type"], dict(trigger.get("metadata") or {})
            scaler = SCALERS.get(kind)
            if scaler is None:
                problems.append(f"{ident(so)}: trigger type {kind!r} is not one Parley uses")
                continue
            for key in sorted(set(meta) - scaler.metadata):
                problems.append(f"{ident(so)}: {kind} has no metadata key {key!r}")
            for key in sorted(scaler.numeric & set(meta)):
                try:
                    float(meta[key])
                except ValueError:
                    problems.append(f"{ident(so)}: {kind} {key}={meta[key]!r} is not a number")
            auth = _auth(docs, so, trigger)
            problems += [f"{ident(so)}: {p}" for p in _required(kind, meta, auth, scaler)]
    for ta in of_kind(docs, "TriggerAuthentication"):
        users = [
            t["type"]
            for so in of_kind(docs, "ScaledObject")
            for t in so["spec"]["triggers"]
            if (t.get("authenticationRef") or {}).get("name") == ta["metadata"]["name"]
        ]
        for ref in ta["spec"].get("secretTargetRef") or []:
            for kind in users:
                if ref["parameter"] not in SCALERS[kind].auth_params:
                    problems.append(f"{ident(ta)}: {kind} takes no parameter {ref['parameter']!r}")
    return problems


def _auth(docs: list[Doc], so: Doc, trigger: Doc) -> Doc | None:
    ref = trigger.get("authenticationRef")
    if not ref:
        return None
    return find(docs, ref.get("kind", "TriggerAuthentication"), ref["name"])


def _required(kind: str, meta: Mapping[str, str], auth: Doc | None, scaler: Scaler) -> list[str]:
    params = {r["parameter"] for r in (auth or {}).get("spec", {}).get("secretTargetRef") or []}
    workload = ((auth or {}).get("spec", {}).get("podIdentity") or {}).get("provider")
    problems: list[str] = []
    if kind == "azure-servicebus":
        if bool(meta.get("queueName")) == bool(meta.get("topicName")):
            problems.append("azure-servicebus needs queueName or topicName (not both)")
        if meta.get("topicName") and not meta.get("subscriptionName"):
            problems.append("azure-servicebus topicName needs subscriptionName")
        if workload == "azure-workload" and not meta.get("namespace"):
            problems.append("azure-servicebus with workload identity needs metadata.namespace")
        if workload is None and not (meta.get("connectionFromEnv") or "connection" in params):
            problems.append("azure-servicebus has neither workload identity nor a connection")
        if "." in meta.get("namespace", ""):
            problems.append("azure-servicebus namespace is the name, not the FQDN")
    elif kind == "redis-streams":
        if not meta.get("stream"):
            problems.append("redis-streams needs stream")
        has_address = {"address", "addressFromEnv", "host", "hostFromEnv"} & set(meta)
        if not has_address and not {"address", "host"} & params:
            problems.append("redis-streams needs an address (metadata or TriggerAuthentication)")
    elif kind == "prometheus":
        for key in ("serverAddress", "query", "threshold"):
            if not meta.get(key):
                problems.append(f"prometheus needs {key}")
    return problems


def check_replica_bounds(docs: list[Doc]) -> list[str]:
    """KEDA's CEL rule (min <= max, max defaulting to 100), which jsonschema cannot run; and a
    Redis Streams queue never scales to zero (delayed retries wait beside the stream, unseen by
    KEDA, until a running worker moves them back: parley/broker/redis.py)."""
    problems: list[str] = []
    for so in of_kind(docs, "ScaledObject"):
        spec = so["spec"]
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if isinstance(low, int) and isinstance(high, int) and low > high:
            problems.append(f"{ident(so)}: minReplicaCount {low} > maxReplicaCount {high}")
        if low == 0 and any(t["type"] == "redis-streams" for t in spec["triggers"]):
            problems.append(f"{ident(so)}: a Redis Streams worker must keep one replica")
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        low, high = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
        if isinstance(low, int) and isinstance(high, int) and low > high:
            problems.append(f"{ident(hpa)}: minReplicas > maxReplicas")
    return problems


def check_scaled_objects(docs: list[Doc]) -> list[str]:
    """Every queue worker has exactly one ScaledObject; every ScaledObject's target exists and
    has no other autoscaler; nothing an autoscaler owns pins `replicas` (an apply would reset
    the count the autoscaler chose)."""
    problems: list[str] = []
    targets: dict[tuple[str, str], list[str]] = {}
    for so in of_kind(docs, "ScaledObject"):
        ref = so["spec"]["scaleTargetRef"]
        kind = ref.get("kind", "Deployment")
        if find(docs, kind, ref["name"]) is None:
            problems.append(f"{ident(so)}: target {kind} {ref['name']} is not in the manifests")
        targets.setdefault((kind, ref["name"]), []).append(so["metadata"]["name"])
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) in targets:
            problems.append(f"{ident(hpa)}: {ref['name']} also has a ScaledObject")
    for dep in of_kind(docs, "Deployment"):
        if module_of(dep) not in QUEUE_OF_MODULE:
            continue
        owners = targets.get(("Deployment", dep["metadata"]["name"]), [])
        if len(owners) != 1:
            problems.append(f"{ident(dep)}: {len(owners)} ScaledObjects (want exactly one)")
    autoscaled = set(targets) | {
        (h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"])
        for h in of_kind(docs, "HorizontalPodAutoscaler")
    }
    for kind, name in sorted(autoscaled):
        target = find(docs, kind, name)
        if target is not None and "replicas" in (target.get("spec") or {}):
            problems.append(f"{ident(target)}: sets replicas, which fights its autoscaler")
    return problems


def check_queues(docs: list[Doc]) -> list[str]:
    """Each worker's trigger watches the queue the code consumes, on the backend the code is
    configured for, with a per-replica target equal to the queue's concurrency."""
    problems: list[str] = []
    for dep in of_kind(docs, "Deployment"):
        queue = QUEUE_OF_MODULE.get(module_of(dep) or "")
        if queue is None:
            continue
        label = dep["metadata"].get("labels", {}).get("parley.io/queue")
        if label != queue:
            problems.append(f"{ident(dep)}: label parley.io/queue={label!r}, runs {queue}")
        settings = settings_for(env_of(docs, dep))
        qs: QueueSettings = getattr(settings.queues, queue)
        for so in of_kind(docs, "ScaledObject"):
            if so["spec"]["scaleTargetRef"]["name"] != dep["metadata"]["name"]:
                continue
            for trigger in so["spec"]["triggers"]:
                problems += [f"{ident(so)}: {p}" for p in _queue_trigger(trigger, settings, qs)]
    return problems


def _queue_trigger(trigger: Doc, settings: Settings, qs: QueueSettings) -> list[str]:
    meta = dict(trigger.get("metadata") or {})
    if trigger["type"] == "azure-servicebus":
        found = []
        if meta.get("queueName") != qs.name:
            found.append(f"queueName {meta.get('queueName')!r} != the code's {qs.name!r}")
        if qs.backend != BrokerBackend.SERVICEBUS:
            found.append(f"scales on Service Bus but {qs.name} is on {qs.backend.value}")
        if meta.get("messageCount") != str(qs.concurrency):
            found.append(f"messageCount {meta.get('messageCount')} != concurrency {qs.concurrency}")
        return found
    if trigger["type"] == "redis-streams":
        stream = settings.keys.queue(qs.name)
        found = []
        if meta.get("stream") != stream:
            found.append(f"stream {meta.get('stream')!r} != the code's {stream!r}")
        if qs.backend != BrokerBackend.REDIS:
            found.append(f"scales on Redis but {qs.name} is on {qs.backend.value}")
        if "consumerGroup" in meta:
            found.append("consumerGroup set: settled entries are deleted, scale on streamLength")
        if meta.get("streamLength") != str(qs.concurrency):
            found.append(f"streamLength {meta.get('streamLength')} != concurrency {qs.concurrency}")
        return found
    return [f"{trigger['type']} does not measure a Parley queue"]


# --- Kaito --------------------------------------------------------------------------------------
@cache
def kaito_presets() -> frozenset[str]:
    models = yaml.safe_load((CRD_DIR / "kaito_supported_models.yaml").read_text())["models"]
    return frozenset(m["name"] for m in models if m["name"] != "base")


# The AKS AI toolchain operator add-on runs Kaito 0.6, which serves the Workspace API only (the
# InferenceSet came in later releases); the CRDs in crds/ are 0.12's, a superset.
ADDON_KAITO_KINDS = {("kaito.sh/v1beta1", "Workspace"), ("kaito.sh/v1alpha1", "Workspace")}
# Pod Security levels that admit Kaito's inference pods (they set no securityContext).
KAITO_POD_SECURITY = {"baseline", "privileged"}


def check_kaito(docs: list[Doc]) -> list[str]:
    """Presets Kaito knows, kinds the AKS add-on serves, and a namespace whose Pod Security
    admits Kaito's pods."""
    problems: list[str] = []
    namespaces = {n["metadata"]["name"]: n for n in of_kind(docs, "Namespace")}
    for doc in of_kind(docs, "InferenceSet", "Workspace"):
        if doc["kind"] == "InferenceSet":
            inference = doc["spec"]["template"]["inference"]
        else:
            inference = doc.get("inference", {})
        preset = (inference.get("preset") or {}).get("name")
        if preset not in kaito_presets():
            problems.append(f"{ident(doc)}: preset {preset!r} is not in Kaito's supported models")
        if (doc["apiVersion"], doc["kind"]) not in ADDON_KAITO_KINDS:
            problems.append(
                f"{ident(doc)}: {doc['apiVersion']} {doc['kind']} is not served by the AKS "
                "add-on's Kaito (0.6: Workspace)"
            )
        namespace = namespaces.get(doc["metadata"].get("namespace", ""))
        labels = (namespace or {}).get("metadata", {}).get("labels") or {}
        level = labels.get("pod-security.kubernetes.io/enforce", "privileged")
        if namespace is None:
            problems.append(f"{ident(doc)}: its namespace is not in the manifests")
        elif level not in KAITO_POD_SECURITY:
            problems.append(
                f"{ident(doc)}: namespace enforces Pod Security {level!r}, which rejects "
                "Kaito's pods (they set no securityContext)"
            )
    return problems


# --- selectors ----------------------------------------------------------------------------------
def check_selectors(docs: list[Doc]) -> list[str]:
    problems: list[str] = []
    all_pods = pod_label_sets(docs)
    for wl in of_kind(docs, *WORKLOAD_KINDS):
        labels = pod_labels(wl)
        if not matches(wl["spec"]["selector"], labels):
            problems.append(f"{ident(wl)}: selector does not match its pod labels")
        for tsc in pod_spec(wl).get("topologySpreadConstraints") or []:
            if not matches(tsc["labelSelector"], labels):
                problems.append(f"{ident(wl)}: topology spread selector misses its own pods")
    for svc in of_kind(docs, "Service"):
        selector = {"matchLabels": svc["spec"].get("selector") or {}}
        if not any(matches(selector, pods) for pods in all_pods):
            problems.append(f"{ident(svc)}: selector matches no pod")
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        if not any(matches(pdb["spec"]["selector"], pods) for pods in all_pods):
            problems.append(f"{ident(pdb)}: selector matches no pod")
    for np in of_kind(docs, "NetworkPolicy"):
        if not any(matches(np["spec"]["podSelector"], pods) for pods in all_pods):
            problems.append(f"{ident(np)}: podSelector matches no pod")
        for rule in [*(np["spec"].get("ingress") or []), *(np["spec"].get("egress") or [])]:
            for peer in [*(rule.get("from") or []), *(rule.get("to") or [])]:
                local = "podSelector" in peer and "namespaceSelector" not in peer
                if local and not any(matches(peer["podSelector"], p) for p in all_pods):
                    problems.append(f"{ident(np)}: peer podSelector matches no pod")
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for dep in of_kind(docs, "Deployment"):
        if not any(matches(p["spec"]["selector"], pod_labels(dep)) for p in pdbs):
            problems.append(f"{ident(dep)}: no PodDisruptionBudget")
    return problems


# --- pods -----------------------------------------------------------------------------------------
def check_pods(docs: list[Doc]) -> list[str]:
    """Drain time, probes, security context, resources and service accounts."""
    problems: list[str] = []
    for wl in of_kind(docs, *WORKLOAD_KINDS):
        spec = pod_spec(wl)
        if runs_parley(wl):
            drain = settings_for(env_of(docs, wl)).drain_seconds
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace <= drain:
                problems.append(f"{ident(wl)}: grace {grace}s does not exceed the drain {drain}s")
            account = find(docs, "ServiceAccount", spec.get("serviceAccountName", "default"))
            if account is None:
                problems.append(
                    f"{ident(wl)}: ServiceAccount {spec.get('serviceAccountName')} missing"
                )
            elif pod_labels(wl).get("azure.workload.identity/use") == "true" and not (
                account["metadata"].get("annotations") or {}
            ).get("azure.workload.identity/client-id"):
                problems.append(f"{ident(wl)}: workload identity without a client-id annotation")
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{ident(wl)}: pod may run as root")
        for c in spec["containers"]:
            sc = c.get("securityContext") or {}
            if not sc.get("readOnlyRootFilesystem"):
                problems.append(f"{ident(wl)}/{c['name']}: writable root filesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{ident(wl)}/{c['name']}: privilege escalation allowed")
            if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
                problems.append(f"{ident(wl)}/{c['name']}: capabilities not dropped")
            res = c.get("resources") or {}
            for side in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(side) or {}):
                    problems.append(f"{ident(wl)}/{c['name']}: no cpu/memory {side}")
            problems += [f"{ident(wl)}/{c['name']}: {p}" for p in _probes(wl, c)]
    return problems


def _probes(wl: Doc, container: Doc) -> list[str]:
    problems: list[str] = []
    served = module_of(wl) in PARLEY_MODULES
    wanted = ("startupProbe", "livenessProbe", "readinessProbe") if served else ()
    for probe in wanted:
        if probe not in container:
            problems.append(f"no {probe}")
    ports = {p.get("name") for p in container.get("ports") or []}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = (container.get(probe) or {}).get("httpGet")
        if http and isinstance(http["port"], str) and http["port"] not in ports:
            problems.append(f"{probe} uses port {http['port']!r}, which the container lacks")
        if served and http and probe != "readinessProbe" and http["path"] != "/healthz":
            problems.append(f"{probe} should ask /healthz (liveness), not {http['path']}")
        if served and http and probe == "readinessProbe" and http["path"] != "/readyz":
            problems.append(f"readinessProbe should ask /readyz, not {http['path']}")
    return problems


# --- ingress ------------------------------------------------------------------------------------
def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(text[:-1]) * units[text[-1].lower()] if text[-1].lower() in units else int(text)


def check_ingress(docs: list[Doc], settings: Settings, min_stream_seconds: int = 600) -> list[str]:
    """Uploads fit, slow streams survive, and nothing pins a client to a replica."""
    problems: list[str] = []
    for ing in of_kind(docs, "Ingress"):
        notes = ing["metadata"].get("annotations") or {}
        body = notes.get("nginx.ingress.kubernetes.io/proxy-body-size", "1m")
        if _size(body) < settings.max_upload_bytes:
            problems.append(
                f"{ident(ing)}: body size {body} < uploads of {settings.max_upload_bytes}"
            )
        for key in ("proxy-read-timeout", "proxy-send-timeout"):
            value = int(notes.get(f"nginx.ingress.kubernetes.io/{key}", "60"))
            if value < min_stream_seconds:
                problems.append(f"{ident(ing)}: {key} {value}s cuts slow streams")
        if any("affinity" in key or "sticky" in key for key in notes):
            problems.append(f"{ident(ing)}: session affinity is not needed (streams resume)")
    return problems


# --- GPU ------------------------------------------------------------------------------------------
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:"


def _gpu_requests(spec: Doc) -> bool:
    return any(
        "nvidia.com/gpu" in {**(c.get("resources") or {}).get("requests", {}),
                             **(c.get("resources") or {}).get("limits", {})}
        for c in spec["containers"]
    )


def _tolerates(tolerations: list[Doc], wanted: Doc) -> bool:
    return any(
        t.get("key") == wanted.get("key")
        and t.get("effect", wanted.get("effect")) == wanted.get("effect")
        and (t.get("operator") == "Exists" or t.get("value") == wanted.get("value"))
        for t in tolerations
    )


def check_gpu(docs: list[Doc]) -> list[str]:
    """A pod asking for nvidia.com/gpu needs NVIDIA's device plugin on the nodes it can land on
    (they advertise no GPU otherwise, and the pod stays Pending): a DaemonSet running the plugin
    whose node selector the pod's nodes satisfy and which tolerates the taints the pod does."""
    problems: list[str] = []
    plugins = [
        pod_spec(d)
        for d in of_kind(docs, "DaemonSet")
        if any(str(c.get("image", "")).startswith(DEVICE_PLUGIN_IMAGE)
               for c in pod_spec(d)["containers"])
    ]
    for wl in of_kind(docs, *WORKLOAD_KINDS):
        spec = pod_spec(wl)
        if not _gpu_requests(spec):
            continue
        nodes = spec.get("nodeSelector") or {}
        taints = [t for t in spec.get("tolerations") or [] if t.get("effect") == "NoSchedule"]
        if not any(
            (p.get("nodeSelector") or {}).items() <= nodes.items()
            and all(_tolerates(p.get("tolerations") or [], t) for t in taints)
            for p in plugins
        ):
            problems.append(f"{ident(wl)}: asks for nvidia.com/gpu, but no NVIDIA device plugin "
                            "runs on the nodes it selects")
    return problems


# --- storage --------------------------------------------------------------------------------------
# AKS's built-in disk classes are locally redundant (zonal) disks.
ZONAL_BUILTIN_CLASSES = {
    "default", "managed", "managed-csi", "managed-premium", "managed-csi-premium",
}


def check_storage(docs: list[Doc], zoned: bool) -> list[str]:
    """On a node pool spread over zones, a pod's disk must be zone-redundant (ZRS) or the pod
    pinned to the disk's zone: a zonal disk cannot follow its pod to another zone."""
    if not zoned:
        return []
    problems: list[str] = []
    classes = {c["metadata"]["name"]: c for c in of_kind(docs, "StorageClass")}
    for sts in of_kind(docs, "StatefulSet"):
        pinned = "nodeAffinity" in (pod_spec(sts).get("affinity") or {})
        for claim in sts["spec"].get("volumeClaimTemplates") or []:
            name = claim["spec"].get("storageClassName", "default")
            storage_class = classes.get(name)
            parameters = (storage_class or {}).get("parameters") or {}
            params = {k.lower(): v for k, v in parameters.items()}
            zrs = str(params.get("skuname", "")).endswith("_ZRS")
            if not zrs and not pinned:
                where = "a built-in zonal class" if name in ZONAL_BUILTIN_CLASSES else "not ZRS"
                problems.append(f"{ident(sts)}: volume {claim['metadata']['name']} uses {name!r} "
                                f"({where}) on a zone-spread pool, and the pod is not pinned")
    return problems


# --- ingress TLS and public paths ---------------------------------------------------------------
APP_ROUTING_CLASS = "webapprouting.kubernetes.azure.com"
KEYVAULT_CERT = "kubernetes.azure.com/tls-cert-keyvault-uri"
# The gateway's routes: what users and API clients reach, and what only the cluster reaches.
PUBLIC_PATHS = ("/", "/static/portal.css", "/static/js/main.js", "/api/documents",
                "/api/auth/config", "/ws", "/v1/chat/completions", "/v1/models")
INTERNAL_PATHS = ("/metrics", "/readyz", "/healthz")


def check_tls(docs: list[Doc]) -> list[str]:
    """With the app-routing add-on's Key Vault integration, the certificate is synced into the
    Secret ``keyvault-<ingress name>``; the Ingress must name that Secret (any other gets NGINX's
    fake certificate)."""
    problems: list[str] = []
    for ing in of_kind(docs, "Ingress"):
        notes = ing["metadata"].get("annotations") or {}
        if ing["spec"].get("ingressClassName") != APP_ROUTING_CLASS or KEYVAULT_CERT not in notes:
            continue
        expected = f"keyvault-{ing['metadata']['name']}"
        tls = ing["spec"].get("tls") or []
        if not tls:
            problems.append(f"{ident(ing)}: a Key Vault certificate but no tls section")
        for entry in tls:
            if entry.get("secretName") != expected:
                problems.append(f"{ident(ing)}: tls secretName {entry.get('secretName')!r}, but "
                                f"the add-on syncs the certificate into {expected!r}")
    return problems


def routed(ingress: Doc, path: str) -> bool:
    """Whether an HTTP path matches one of the Ingress's rules (Exact, or Prefix by whole path
    elements, as the Ingress API defines them)."""
    for rule in ingress["spec"].get("rules") or []:
        for entry in (rule.get("http") or {}).get("paths") or []:
            wanted, kind = entry.get("path", "/"), entry.get("pathType")
            if kind == "Exact" and path == wanted:
                return True
            if kind in ("Prefix", "ImplementationSpecific"):
                prefix = wanted.rstrip("/")
                if prefix == "" or path == prefix or path.startswith(prefix + "/"):
                    return True
    return False


def check_public_paths(docs: list[Doc]) -> list[str]:
    """The public ingress routes the portal, its API, the websocket and the OpenAI face, and
    neither /metrics nor the probes."""
    problems: list[str] = []
    for ing in of_kind(docs, "Ingress"):
        problems += [f"{ident(ing)}: {p} is reachable from outside"
                     for p in INTERNAL_PATHS if routed(ing, p)]
        problems += [f"{ident(ing)}: {p} is not routed" for p in PUBLIC_PATHS if not routed(ing, p)]
    return problems


def _zoned(docs: list[Doc]) -> bool:
    return any(i["spec"].get("ingressClassName") == APP_ROUTING_CLASS
               for i in of_kind(docs, "Ingress"))


def all_checks(docs: list[Doc]) -> Iterator[tuple[str, list[str]]]:
    """Every check by name (schemas last: they are the slowest)."""
    settings = settings_for({})
    yield "keda_triggers", check_keda_triggers(docs)
    yield "replica_bounds", check_replica_bounds(docs)
    yield "scaled_objects", check_scaled_objects(docs)
    yield "queues", check_queues(docs)
    yield "kaito", check_kaito(docs)
    yield "selectors", check_selectors(docs)
    yield "pods", check_pods(docs)
    yield "ingress", check_ingress(docs, settings)
    yield "tls", check_tls(docs)
    yield "public_paths", check_public_paths(docs)
    yield "gpu", check_gpu(docs)
    yield "storage", check_storage(docs, zoned=_zoned(docs))
    yield "schemas", check_schemas(docs)
