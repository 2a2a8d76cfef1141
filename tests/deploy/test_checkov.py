"""checkov over infra/ (Terraform), k8s/ as written, the rendered manifests and the Dockerfile:
nothing but the written-down waivers, and every file parsed. One checkov run per session
(it takes ~30 s)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from . import checkov_report as ck
from .conftest import VARIANTS, render_variant

pytestmark = pytest.mark.skipif(
    not ck.CHECKOV.exists() and not os.environ.get("CI"),
    reason="checkov is not installed: run scripts/install-deploy-tools.sh",
)


@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory) -> ck.Report:
    rendered = tmp_path_factory.mktemp("rendered")
    for variant in VARIANTS:
        docs = render_variant(variant)
        (rendered / f"{variant}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    # checkov ignores -f beside -d: the Dockerfile goes in with the renderings.
    (rendered / "Dockerfile").write_text((ck.ROOT / "Dockerfile").read_text())
    paths = [ck.ROOT / "infra", ck.ROOT / "k8s", rendered]
    return ck.run(paths, ["terraform", "kubernetes", "dockerfile"])


@pytest.mark.slow
def test_every_finding_is_waived_with_a_reason(report: ck.Report) -> None:
    assert ck.problems(report, ck.load_waivers()) == []


@pytest.mark.slow
def test_checkov_parsed_and_checked_everything(report: ck.Report) -> None:
    assert report.parsing_errors == []
    assert report.resources["terraform"] >= 40
    # raw k8s/ files plus four renderings
    assert report.resources["kubernetes"] >= 150
    assert report.resources["dockerfile"] >= 1


@pytest.mark.slow
def test_a_file_checkov_cannot_parse_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "broken.tf").write_text('resource "azurerm_resource_group" "x" {\n  name = \n')
    broken = ck.run([tmp_path], ["terraform"])
    assert any("could not parse" in p and "broken.tf" in p for p in ck.problems(broken, {}))


def test_an_unwaived_finding_fails_the_run() -> None:
    report = ck.Report(findings=[ck.Finding("kubernetes", "CKV_K8S_20", "Deployment.p.x", "/x")])
    assert ck.problems(report, {}) == ["kubernetes CKV_K8S_20 on Deployment.p.x (/x) is not waived"]
    other_resource = {
        "kubernetes": {"CKV_K8S_20": {"resources": ["Deployment.p.y"], "reason": "r"}}
    }
    assert "is not waived" in ck.problems(report, other_resource)[0]


def test_a_waiver_narrowed_to_files_covers_only_those() -> None:
    waivers = {
        "kubernetes": {"CKV_K8S_15": {"resources": "*", "files": ["/dev.yaml"], "reason": "r"}}
    }
    dev = ck.Finding("kubernetes", "CKV_K8S_15", "Deployment.p.x", "/dev.yaml")
    aks = ck.Finding("kubernetes", "CKV_K8S_15", "Deployment.p.x", "/aks.yaml")
    assert ck.problems(ck.Report(findings=[dev]), waivers) == []
    assert ck.problems(ck.Report(findings=[dev, aks]), waivers) == [
        "kubernetes CKV_K8S_15 on Deployment.p.x (/aks.yaml) is not waived"
    ]


def test_stale_and_unexplained_waivers_fail_the_run() -> None:
    waivers = {"terraform": {"CKV_AZURE_1": {"resources": "*", "reason": " "}}}
    assert ck.problems(ck.Report(), waivers) == [
        "waiver terraform/CKV_AZURE_1 has no reason",
        "waiver terraform/CKV_AZURE_1 matches no finding (stale)",
    ]


def test_parse_reads_parsing_errors_from_the_summary() -> None:
    text = (
        '{"check_type": "terraform", "summary": {"parsing_errors": 1, "resource_count": 0},'
        ' "results": {"failed_checks": []}}'
    )
    assert ck.parse(text).parsing_errors == ["terraform: 1 files"]
