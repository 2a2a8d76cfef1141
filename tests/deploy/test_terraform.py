"""infra/ parses, carries what the deploy issue asks for, agrees with the code and the AKS
overlay, and is formatted; broken copies show each check can fail."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from celery import Celery

from parley.settings import Settings

from . import terraform_checks as tc
from .conftest import K8S, ROOT
from .kustomize import Doc, _read_env

INFRA = ROOT / "infra"
AKS = K8S / "overlays" / "aks"


def _overlay_files() -> dict[str, dict[str, str]]:
    return {name: _read_env(AKS / name) for name in ("azure.env", "identities.env", "settings.env")}


def _problems(module: tc.Module, docs: list[Doc]) -> list[str]:
    files, settings = _overlay_files(), Settings()
    env = {**files["settings.env"], **files["azure.env"]}
    return [
        *tc.check_cluster(module),
        *tc.check_messaging(module, settings),
        *tc.check_storage(module, settings, env),
        *tc.check_openai(module, env),
        *tc.check_identities(module, tc.service_accounts_with_identity(docs)),
        *tc.check_interface(module, files),
        *tc.check_entra(module),
        *tc.check_overlay_files(module),
        *tc.check_keyvault_waits(module),
        *tc.check_kaito_identity(module),
    ]


def test_infra_passes_every_check(rendered: dict[str, list[Doc]]) -> None:
    module = tc.load(INFRA)
    assert len(module.resources) >= 30
    assert _problems(module, rendered["aks"]) == []


def test_each_workload_identity_is_federated_with_its_service_account() -> None:
    module = tc.load(INFRA)
    credential = module.resource("azurerm_federated_identity_credential", "workload")
    assert credential["subject"] == (
        "system:serviceaccount:${each.value.namespace}:${each.value.service_account}"
    )
    assert credential["audience"] == ["api://AzureADTokenExchange"]
    assert "oidc_issuer_url" in credential["issuer"]


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform not installed")
def test_terraform_fmt_is_clean() -> None:
    done = subprocess.run(
        ["terraform", "fmt", "-check", "-diff", str(INFRA)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout


Edit = Callable[[str], str]

BROKEN: list[tuple[str, str, str, str]] = [
    (
        "aks.tf",
        "  workload_identity_enabled         = true\n",
        "",
        "AKS: workload_identity_enabled is not true",
    ),
    ("aks.tf", "    keda_enabled = true", "    keda_enabled = false", "the KEDA add-on is off"),
    ("aks.tf", '  node_taints           = ["sku=gpu:NoSchedule"]\n', "", "not tainted"),
    (
        "variables.tf",
        'default     = "parley-ingest"',
        'default     = "ingest"',
        "queue 'ingest' != 'parley-ingest'",
    ),
    (
        "messaging.tf",
        'lock_duration                        = "PT2M"',
        'lock_duration                        = "PT30S"',
        "embed lock 30s < lease 60.0s",
    ),
    ("messaging.tf", '"NoEviction"', '"VolatileLRU"', "queues may be evicted"),
    (
        "variables.tf",
        "  default     = 5\n",
        "  default     = 10\n",
        "ingest max_delivery_count != max_attempts",
    ),
    (
        "storage.tf",
        '["Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted"]',
        '["Microsoft.Storage.BlobCreated"]',
        "not BlobCreated + BlobDeleted",
    ),
    (
        "storage.tf",
        "  shared_access_key_enabled         = false\n",
        "",
        "Storage: shared keys are enabled",
    ),
    (
        "variables.tf",
        'default     = "gpt-4o-mini"',
        'default     = "chat"',
        "chat deployment 'chat' != PARLEY_AZURE_OPENAI_CHAT_DEPLOYMENT",
    ),
    (
        "identity.tf",
        '{ workload = "inference", role = "Cognitive Services OpenAI User"',
        '{ workload = "inference", role = "Contributor"',
        "gets Contributor, not a data role",
    ),
    (
        "identity.tf",
        '    embed       = { namespace = var.namespace, service_account = "parley-embed" }\n',
        "",
        "ServiceAccount parley-embed has no federated identity",
    ),
    (
        "outputs.tf",
        '    KEDA_CLIENT_ID        = azurerm_user_assigned_identity.workload["keda"]'
        ".client_id\n",
        "",
        "overlay_env gives ['KEDA_CLIENT_ID'] unlike identities.env",
    ),
    ("entra.tf", '      type                       = "User"\n', "", "exposes no user scope"),
    (
        "entra.tf",
        '    redirect_uris = ["https://${var.gateway_host}/"]',
        "    redirect_uris = []",
        "no single-page-app redirect URI",
    ),
    (
        "outputs.tf",
        "    PARLEY_ENTRA_AUDIENCE                    = azuread_application_identifier_uri"
        ".gateway.identifier_uri\n",
        "",
        "azure.env gets no PARLEY_ENTRA_AUDIENCE",
    ),
    (
        "overlay.tf",
        'resource "local_sensitive_file" "redis_keda_env"',
        'resource "local_file" "redis_keda_env"',
        "redis-keda.env holds a secret",
    ),
    (
        "overlay.tf",
        '"${local.overlay_dir}/secrets/parley.env"',
        '"${local.overlay_dir}/parley.env"',
        "does not write k8s/overlays/aks/secrets/parley.env",
    ),
    (
        "keyvault.tf",
        "  depends_on = [time_sleep.deployer_secrets_officer_propagation]",
        "  depends_on = [azurerm_role_assignment.deployer_secrets_officer]",
        "no time_sleep for RBAC propagation",
    ),
    (
        "kaito.tf",
        '"system:serviceaccount:kube-system:kaito-gpu-provisioner"',
        '"system:serviceaccount:kube-system:gpu-provisioner"',
        "no federated credential for system:serviceaccount:kube-system:kaito-gpu-provisioner",
    ),
    ("kaito.tf", '"Contributor"', '"Reader"', "may not add node pools"),
    (
        "variables.tf",
        '  description = "Azure Managed Redis SKU (chat queue, token streams, Celery broker)."\n',
        "",
        "variables: redis_sku lacks a description",
    ),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"), BROKEN, ids=[b[3][:40] for b in BROKEN]
)
def test_broken_infra_is_caught(
    rendered: dict[str, list[Doc]], tmp_path: Path, file: str, old: str, new: str, expected: str
) -> None:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    text = (copy / file).read_text()
    assert text.count(old) >= 1, f"{old!r} not in {file}"
    (copy / file).write_text(text.replace(old, new, 1))
    found = _problems(tc.load(copy), rendered["aks"])
    assert any(expected in p for p in found), found


def test_unparseable_terraform_fails(tmp_path: Path) -> None:
    (tmp_path / "broken.tf").write_text('resource "azurerm_resource_group" "x" {\n  name = \n')
    with pytest.raises(Exception, match=r"(?i)unexpected|error"):
        tc.load(tmp_path)


def test_the_redis_url_terraform_writes_survives_any_access_key() -> None:
    # Azure's access keys are base64: '/', '+' and '=' must reach redis-py and kombu intact.
    module = tc.load(INFRA)
    template = module.locals["parley_secrets"]["PARLEY_REDIS_URL"]
    key = "Ab/cd+EF=gh/Ij+Kl=="
    url = tc.render_template(
        template,
        {"local.redis_key": key, "local.redis_host": "redis-x.westeurope.redis.azure.net",
         "local.redis_port": "10000"},
    )
    kwargs = redis.Redis.from_url(url).connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["host"], kwargs["port"]) == (
        key, "redis-x.westeurope.redis.azure.net", 10000
    )
    celery = Celery("x", broker=url, set_as_current=False)
    parsed = celery.connection_for_write()
    assert (parsed.password, parsed.hostname, parsed.port) == (
        key, "redis-x.westeurope.redis.azure.net", 10000
    )
    keda = module.locals["redis_keda"]
    assert tc.render_template(keda["password"], {"local.redis_key": key}) == key


def test_an_unencoded_key_breaks_the_url() -> None:
    # Why the URL-encoding: the same key pasted into the URL as it is (what docs/deploy.md did).
    key = "Ab/cd+EF=gh"
    url = f"rediss://:{key}@redis-x.westeurope.redis.azure.net:10000/0"
    with pytest.raises(ValueError, match="Port could not be cast"):
        redis.Redis.from_url(url)
