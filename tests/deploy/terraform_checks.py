"""Checks of infra/ parsed with python-hcl2: the resources and settings the deploy issue asks for,
and the values that must equal the code's (queue names, deployments, container, attempts).
Pure functions over a :class:`Module`, each returning a list of problems."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

from parley.settings import Settings

from .checks import K8S_VERSION
from .kustomize import Doc


def _clean(node: Any) -> Any:
    """hcl2 keeps string quotes (``'"x"'``) and block markers; drop both."""
    if isinstance(node, dict):
        return {_clean(k): _clean(v) for k, v in node.items() if k != "__is_block__"}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"':
        return node[1:-1]
    return node


@dataclass
class Module:
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        return self.resources.get((kind, name), {})

    def value(self, expr: Any) -> Any:
        """A literal, or the default of the variable it names alone (``${var.x}``)."""
        if isinstance(expr, str):
            match = re.fullmatch(r"\$\{var\.(\w+)\}", expr)
            if match:
                return self.variables.get(match.group(1), {}).get("default")
        return expr


@cache
def _parse(text: str) -> Any:
    # Keyed on the text: a broken copy of infra/ reparses only the file it changed.
    return _clean(hcl2.loads(text))


def load(directory: Path) -> Module:
    """Every ``*.tf`` in ``directory``; a file python-hcl2 cannot parse raises."""
    module = Module()
    for path in sorted(directory.glob("*.tf")):
        data = copy.deepcopy(_parse(path.read_text()))
        for block in data.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    module.resources[(kind, name)] = body
        for block in data.get("variable", []):
            module.variables.update(block)
        for block in data.get("locals", []):
            module.locals.update(block)
        for block in data.get("output", []):
            module.outputs.update(block)
    return module


def _block(body: dict[str, Any], name: str) -> dict[str, Any]:
    blocks = body.get(name) or [{}]
    return dict(blocks[0]) if isinstance(blocks, list) else {}


def _iso_seconds(duration: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", duration)
    if not match:
        raise ValueError(duration)
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def check_cluster(m: Module) -> list[str]:
    aks = m.resource("azurerm_kubernetes_cluster", "main")
    problems = []
    for flag in (
        "oidc_issuer_enabled",
        "workload_identity_enabled",
        "local_account_disabled",
        "ai_toolchain_operator_enabled",
        "role_based_access_control_enabled",
    ):
        if aks.get(flag) is not True:
            problems.append(f"AKS: {flag} is not true")
    if _block(aks, "workload_autoscaler_profile").get("keda_enabled") is not True:
        problems.append("AKS: the KEDA add-on is off")
    if _block(aks, "default_node_pool").get("only_critical_addons_enabled") is not True:
        problems.append("AKS: the system pool also takes application pods")
    if not _block(aks, "network_profile").get("network_policy"):
        problems.append("AKS: no network policy engine (k8s/ NetworkPolicies would not apply)")
    for block in ("monitor_metrics", "oms_agent", "web_app_routing"):
        if block not in aks:
            problems.append(f"AKS: no {block} block")
    if m.value(aks.get("kubernetes_version")) != K8S_VERSION:
        problems.append(f"AKS: version is not {K8S_VERSION}, the one manifests are checked for")
    user = m.resource("azurerm_kubernetes_cluster_node_pool", "user")
    if user.get("mode") != "User":
        problems.append("AKS: no user node pool")
    gpu = m.resource("azurerm_kubernetes_cluster_node_pool", "gpu")
    if "var.gpu_pool_enabled" not in str(gpu.get("count")):
        problems.append("AKS: the GPU pool is not optional (count on var.gpu_pool_enabled)")
    if "sku=gpu:NoSchedule" not in (gpu.get("node_taints") or []):
        problems.append("AKS: the GPU pool is not tainted sku=gpu:NoSchedule")
    return problems


def check_messaging(m: Module, settings: Settings) -> list[str]:
    problems = []
    if m.resource("azurerm_servicebus_namespace", "main").get("local_auth_enabled") is not False:
        problems.append("Service Bus: SAS keys are enabled")
    for key in ("ingest", "embed"):
        queue = m.resource("azurerm_servicebus_queue", key)
        code = getattr(settings.queues, key)
        if m.value(queue.get("name")) != code.name:
            problems.append(f"Service Bus: queue {m.value(queue.get('name'))!r} != {code.name!r}")
        if m.value(queue.get("max_delivery_count")) != code.max_attempts:
            problems.append(f"Service Bus: {key} max_delivery_count != max_attempts")
        if queue.get("dead_lettering_on_message_expiration") is not True:
            problems.append(f"Service Bus: {key} does not dead-letter expired messages")
        lock = _iso_seconds(str(queue.get("lock_duration", "PT1M")))
        if lock < code.lease_seconds:
            problems.append(f"Service Bus: {key} lock {lock}s < lease {code.lease_seconds}s")
    redis = _block(m.resource("azurerm_managed_redis", "main"), "default_database")
    if redis.get("eviction_policy") != "NoEviction":
        problems.append("Redis: queues may be evicted (eviction_policy is not NoEviction)")
    if redis.get("clustering_policy") != "NoCluster":
        problems.append("Redis: clustered, but Parley's client is not cluster-aware")
    return problems


def check_storage(m: Module, settings: Settings, aks_env: dict[str, str]) -> list[str]:
    problems = []
    account = m.resource("azurerm_storage_account", "documents")
    if account.get("shared_access_key_enabled") is not False:
        problems.append("Storage: shared keys are enabled")
    container = m.value(m.resource("azurerm_storage_container", "documents").get("name"))
    if container != aks_env.get("PARLEY_BLOB_CONTAINER", settings.blob_container):
        problems.append(f"Storage: container {container!r} is not the one Parley reads")
    sub = m.resource("azurerm_eventgrid_system_topic_event_subscription", "ingest")
    events = set(sub.get("included_event_types") or [])
    if events != {"Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted"}:
        problems.append(f"Event Grid: delivers {sorted(events)}, not BlobCreated + BlobDeleted")
    if "azurerm_servicebus_queue.ingest.id" not in str(sub.get("service_bus_queue_endpoint_id")):
        problems.append("Event Grid: blob events do not go to the ingest queue")
    if "delivery_identity" not in sub:
        problems.append("Event Grid: delivers with keys, not its managed identity")
    return problems


def check_openai(m: Module, env: dict[str, str]) -> list[str]:
    problems = []
    account = m.resource("azurerm_cognitive_account", "openai")
    if account.get("kind") != "OpenAI" or account.get("local_auth_enabled") is not False:
        problems.append("OpenAI: not an Entra-only OpenAI account")
    for key, setting in (
        ("chat", "PARLEY_AZURE_OPENAI_CHAT_DEPLOYMENT"),
        ("embedding", "PARLEY_AZURE_OPENAI_EMBEDDING_DEPLOYMENT"),
    ):
        name = m.value(m.resource("azurerm_cognitive_deployment", key).get("name"))
        if name != env.get(setting):
            problems.append(f"OpenAI: {key} deployment {name!r} != {setting}={env.get(setting)!r}")
    vault = m.resource("azurerm_key_vault", "main")
    if vault.get("rbac_authorization_enabled") is not True:
        problems.append("Key Vault: access policies instead of Azure RBAC")
    if m.resource("azurerm_container_registry", "main").get("admin_enabled") is not False:
        problems.append("ACR: admin user enabled")
    return problems


# Data roles, plus Storage Blob Delegator: it grants only generateUserDelegationKey (needed at
# the account scope to sign the portal's upload SAS), no data and no management access.
_DATA_ROLES = re.compile(
    r"Data (Sender|Receiver|Owner|Reader|Contributor)$|OpenAI User$|^Storage Blob Delegator$"
)


def check_identities(m: Module, service_accounts: set[str]) -> list[str]:
    """One federated identity per workload ServiceAccount in the manifests, data roles only."""
    problems = []
    workloads: dict[str, dict[str, str]] = m.locals.get("workloads", {})
    federated = {w["service_account"] for w in workloads.values()}
    for account in sorted(service_accounts - federated):
        problems.append(f"identity: ServiceAccount {account} has no federated identity")
    for account in sorted(federated - service_accounts - {"keda-operator"}):
        problems.append(f"identity: {account} is federated but not in the manifests")
    scopes = m.locals.get("scopes", {})
    for grant in m.locals.get("grants", []):
        if grant["workload"] not in workloads:
            problems.append(f"identity: grant to unknown workload {grant['workload']}")
        if grant["scope"] not in scopes:
            problems.append(f"identity: grant on unknown scope {grant['scope']}")
        if not _DATA_ROLES.search(grant["role"]):
            problems.append(f"identity: {grant['workload']} gets {grant['role']}, not a data role")
    return problems


def check_interface(m: Module, overlay_files: dict[str, dict[str, str]]) -> list[str]:
    """Outputs that feed the AKS overlay produce exactly its keys; variables are documented."""
    problems = []
    for output, local, file in (
        ("parley_env", "parley_env", "azure.env"),
        ("overlay_env", "overlay_env", "identities.env"),
    ):
        if output not in m.outputs:
            problems.append(f"outputs: no {output}")
        produced, expected = set(m.locals.get(local, {})), set(overlay_files[file])
        if produced != expected:
            problems.append(f"outputs: {output} gives {sorted(produced ^ expected)} unlike {file}")
    for name, variable in m.variables.items():
        if not variable.get("description") or "type" not in variable:
            problems.append(f"variables: {name} lacks a description or type")
    for name, body in m.outputs.items():
        if not body.get("description"):
            problems.append(f"outputs: {name} lacks a description")
    return problems


def service_accounts_with_identity(docs: list[Doc]) -> set[str]:
    """ServiceAccounts of pods that reach Azure (workload identity label on AKS)."""
    accounts = set()
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            labels = doc["spec"]["template"]["metadata"].get("labels") or {}
            if labels.get("azure.workload.identity/use") == "true":
                accounts.add(doc["spec"]["template"]["spec"]["serviceAccountName"])
    return accounts
