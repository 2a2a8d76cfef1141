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
from urllib.parse import quote

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
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
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
        for block in data.get("data", []):
            for kind, named in block.items():
                for name, body in named.items():
                    module.data[(kind, name)] = body
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


# --- sign-in, the overlay's files, Kaito's provisioner, Key Vault -------------------------------
ENTRA_SETTINGS = ("PARLEY_ENTRA_TENANT_ID", "PARLEY_ENTRA_AUDIENCE", "PARLEY_ENTRA_CLIENT_ID")


def check_entra(m: Module) -> list[str]:
    """An app registration exposing a user scope, the portal as its single-page application, a
    service principal, and every Entra setting the gateway needs in azure.env."""
    problems = []
    apps = {n: b for (k, n), b in m.resources.items() if k == "azuread_application"}
    if not apps:
        problems.append("Entra: no app registration (azuread_application)")
    for name, app in apps.items():
        scopes = _block(app, "api").get("oauth2_permission_scope") or []
        if not any(s.get("type") == "User" and s.get("enabled", True) for s in scopes):
            problems.append(f"Entra: application {name} exposes no user scope")
        redirects = _block(app, "single_page_application").get("redirect_uris") or []
        if not any(str(r).startswith("https://") for r in redirects):
            problems.append(f"Entra: application {name} has no single-page-app redirect URI "
                            "(the portal's authorization code + PKCE sign-in)")
    if not any(k == "azuread_service_principal" for k, _ in m.resources):
        problems.append("Entra: no service principal for the app registration")
    env = m.locals.get("parley_env", {})
    for setting in ENTRA_SETTINGS:
        if not env.get(setting):
            problems.append(f"Entra: azure.env gets no {setting}")
    return problems


# The files the AKS overlay reads, and whether each holds a secret.
OVERLAY_FILES = {
    "azure.env": False,
    "identities.env": False,
    "secrets/parley.env": True,
    "secrets/redis-keda.env": True,
}


def check_overlay_files(m: Module) -> list[str]:
    """Terraform writes every file the AKS overlay reads (nothing is copied by hand); secrets as
    local_sensitive_file, readable by their owner only."""
    problems = []
    written: dict[str, tuple[str, dict[str, Any]]] = {}
    for (kind, _), body in m.resources.items():
        if kind in ("local_file", "local_sensitive_file"):
            filename = re.sub(
                r"\$\{local\.(\w+)\}",
                lambda ref: str(m.locals.get(ref.group(1), ref.group(0))),
                str(body.get("filename", "")),
            )
            for name in OVERLAY_FILES:
                if filename.endswith(f"k8s/overlays/aks/{name}"):
                    written[name] = (kind, body)
    for name, secret in OVERLAY_FILES.items():
        if name not in written:
            problems.append(f"overlay: Terraform does not write k8s/overlays/aks/{name}")
            continue
        kind, body = written[name]
        if secret and (kind != "local_sensitive_file" or body.get("file_permission") != "0600"):
            problems.append(f"overlay: {name} holds a secret: local_sensitive_file, mode 0600")
    return problems


_INTERPOLATION = re.compile(r"\$\{([^{}]+)\}")


def render_template(template: str, values: dict[str, str]) -> str:
    """A Terraform string template of references (``${local.x}``) and ``urlencode()`` calls,
    with the references' values given: what Terraform writes."""

    def evaluate(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        call = re.fullmatch(r"urlencode\((.+)\)", expr)
        if call:
            # Terraform's urlencode leaves letters, digits and -_.~ alone (RFC 3986 unreserved).
            return quote(values[call.group(1).strip()], safe="-_.~")
        return values[expr]

    return _INTERPOLATION.sub(evaluate, template)


def check_keyvault_waits(m: Module) -> list[str]:
    """Secrets written by Terraform wait for their writer's role to propagate: each depends on a
    time_sleep that itself depends on the role assignment."""
    problems = []
    for (kind, name), body in m.resources.items():
        if kind != "azurerm_key_vault_secret":
            continue
        sleeps = [d for d in body.get("depends_on") or [] if "time_sleep." in str(d)]
        if not sleeps:
            problems.append(f"Key Vault: secret {name} is written as soon as the role is assigned "
                            "(no time_sleep for RBAC propagation)")
        for ref in sleeps:
            sleep = m.resource("time_sleep", str(ref).strip("${}").split(".")[1])
            after = " ".join(str(d) for d in sleep.get("depends_on") or [])
            if "azurerm_role_assignment." not in after or not sleep.get("create_duration"):
                problems.append(f"Key Vault: {ref} does not wait after a role assignment")
    return problems


KAITO_SUBJECT = "system:serviceaccount:kube-system:kaito-gpu-provisioner"


def check_kaito_identity(m: Module) -> list[str]:
    """The add-on's gpu-provisioner identity is federated with its service account and may add
    node pools."""
    aks = m.resource("azurerm_kubernetes_cluster", "main")
    if aks.get("ai_toolchain_operator_enabled") is not True:
        return []
    identity = next(
        (
            n
            for (k, n), b in m.data.items()
            if k == "azurerm_user_assigned_identity"
            and "ai-toolchain-operator-" in str(b.get("name"))
        ),
        None,
    )
    if identity is None:
        return ["Kaito: the add-on's identity (ai-toolchain-operator-<cluster>) is not looked up"]
    ref = f"data.azurerm_user_assigned_identity.{identity}."
    problems = []
    credentials = [
        b for (k, _), b in m.resources.items()
        if k == "azurerm_federated_identity_credential" and ref in str(b.get("parent_id"))
    ]
    if not any(c.get("subject") == KAITO_SUBJECT for c in credentials):
        problems.append(f"Kaito: no federated credential for {KAITO_SUBJECT}")
    if not any(
        k == "azurerm_role_assignment" and ref in str(b.get("principal_id"))
        and b.get("role_definition_name") == "Contributor"
        for (k, _), b in m.resources.items()
    ):
        problems.append("Kaito: the gpu-provisioner identity may not add node pools (Contributor)")
    return problems
