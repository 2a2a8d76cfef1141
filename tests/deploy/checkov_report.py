"""Running checkov (from its own venv, .venv-checkov) and judging its JSON report against the
written-down waivers (checkov_waivers.yaml): every finding needs a waiver with a reason, every
waiver needs a finding, and a file checkov could not parse fails the run (checkov itself exits
0 on one)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
WAIVERS = Path(__file__).parent / "checkov_waivers.yaml"


@dataclass(frozen=True)
class Finding:
    framework: str
    check_id: str
    resource: str
    file: str


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    parsing_errors: list[str] = field(default_factory=list)
    resources: dict[str, int] = field(default_factory=dict)


def run(paths: Sequence[Path], frameworks: Sequence[str], timeout: float = 600) -> Report:
    """One checkov process over ``paths`` (directories or files); no downloads."""
    # Not --quiet: it drops the list of files that failed to parse.
    argv = [str(CHECKOV), "--skip-download", "--compact", "-o", "json"]
    argv += ["--framework", *frameworks]
    for path in paths:
        argv += ["-f" if path.is_file() else "-d", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode not in (0, 1):  # 1 = findings
        raise RuntimeError(f"checkov exited {done.returncode}: {done.stderr[-2000:]}")
    return parse(done.stdout)


def _documents(text: str) -> list[Any]:
    """checkov prints one JSON document per directory (each a report or a list of reports)."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        doc, end = decoder.raw_decode(text, at)
        docs += doc if isinstance(doc, list) else [doc]
        at = end
        while at < len(text) and text[at].isspace():
            at += 1
    return docs


def parse(text: str) -> Report:
    report = Report()
    for part in _documents(text):
        framework = str(part.get("check_type", "?"))
        summary = part.get("summary", {})
        report.resources[framework] = report.resources.get(framework, 0) + int(
            summary.get("resource_count", 0)
        )
        results = part.get("results", {})
        errors = list(results.get("parsing_errors") or [])
        if int(summary.get("parsing_errors", 0)) and not errors:
            errors = [f"{framework}: {summary['parsing_errors']} files"]
        report.parsing_errors += [str(e) for e in errors]
        for failed in results.get("failed_checks") or []:
            report.findings.append(
                Finding(framework, failed["check_id"], failed["resource"], failed["file_path"])
            )
    return report


def load_waivers(path: Path = WAIVERS) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = yaml.safe_load(path.read_text())
    return data


def problems(report: Report, waivers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Everything that makes the run fail: unparsed files, unwaived findings, waivers without a
    reason, and stale waivers. A waiver names its check's ``resources`` ("*" for all) and may
    narrow them to ``files`` (suffixes of the scanned paths, e.g. one rendering)."""
    found = [f"checkov could not parse {e}" for e in report.parsing_errors]
    used: set[tuple[str, str]] = set()
    for framework, checks in waivers.items():
        for check_id, waiver in checks.items():
            if not str(waiver.get("reason") or "").strip():
                found.append(f"waiver {framework}/{check_id} has no reason")
    for finding in report.findings:
        waiver = waivers.get(finding.framework, {}).get(finding.check_id)
        allowed = (waiver or {}).get("resources", [])
        files = (waiver or {}).get("files")
        if (
            waiver is None
            or (allowed != "*" and finding.resource not in allowed)
            or (files is not None and not finding.file.endswith(tuple(files)))
        ):
            found.append(
                f"{finding.framework} {finding.check_id} on {finding.resource} "
                f"({finding.file}) is not waived"
            )
        else:
            used.add((finding.framework, finding.check_id))
    for framework, checks in waivers.items():
        for check_id in checks:
            if (framework, check_id) not in used:
                found.append(f"waiver {framework}/{check_id} matches no finding (stale)")
    return found
