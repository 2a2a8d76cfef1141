"""infra/ parses, carries what the deploy issue asks for, agrees with the code and the AKS
overlay, and is formatted; broken copies show each check can fail."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

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
        '    KEDA_CLIENT_ID            = azurerm_user_assigned_identity.workload["keda"]'
        ".client_id\n",
        "",
        "overlay_env gives ['KEDA_CLIENT_ID'] unlike identities.env",
    ),
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
