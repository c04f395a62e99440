"""What a nightly tells the CI system that ran it: `summary.json` and `junit.xml`.

The JSON summary holds the nightly's id, its baseline (each device's, and the latest of them), its
status and exit code (with what it means), each device's outcome (ok, failed, skipped, with the
reason and notes such as a stale place released) and each measurement with its figures and its
verdict against the baseline. The JUnit XML has one test suite per device and one test case per
measurement (model / format / runtime): a failure for a regression (`compare.is_regression`: slower
beyond T with confidence; lower top-1 on the same images; or newly failing: failing now after
running ok in the baseline, or failing with no baseline measurement to compare with), an error for
a measurement that failed in the baseline too or a device that could not be measured, skipped for a
device whose place stayed held by someone else or a measurement that ran ok with no baseline
measurement to compare it with, or whose speed could not be judged against it (another
instruction set, accelerator or precision, timed scope, mixed sessions): not gated, with why; and
a test suite `suite build`, a failed case per suite entry that did not build (so was measured
nowhere). Both are written with the standard library
only.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.farm.nightly import DeviceOutcome
from harness.report.compare import TOP1_CHANGES, failing_verdicts, is_regression
from harness.report.console import format_interval
from harness.report.stats import TOP1_THRESHOLD_POINTS


def case_name(row: dict[str, Any]) -> str:
    return f"{row['model']} [{row['format']}, {row['runtime']}, {row.get('threads')} threads]"


def baseline_text(summary: dict[str, Any]) -> str:
    """The nightly's baseline in words: "none", a run id, or each device's where they differ."""
    baselines = summary.get("baselines") or {}
    if len(set(baselines.values())) > 1:
        return ", ".join(f"{device} {run or 'none'}" for device, run in baselines.items())
    return str(summary.get("baseline") or "none")


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n",
                    encoding="utf-8")
    return path


def summary_document(*, nightly_id: str, baseline: str | None,
                     baselines: Mapping[str, str | None] | None = None, status: str,
                     exit_code: int,
                     exit_meaning: str, fail_on_regression: bool,
                     outcomes: Sequence[DeviceOutcome], measurements: Sequence[dict[str, Any]],
                     fingerprint_differences: dict[str, list[str]], threshold: float,
                     top1_threshold: float = TOP1_THRESHOLD_POINTS,
                     build_failures: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    return {
        "nightly_id": nightly_id,
        "baseline": baseline,  # the latest of the devices' baselines (theirs, when one)
        "baselines": dict(baselines) if baselines is not None else {
            str(o.name): baseline for o in outcomes},
        "status": status,
        "exit_code": exit_code,
        "exit_meaning": exit_meaning,
        "fail_on_regression": fail_on_regression,
        "threshold": threshold,
        "top1_threshold": top1_threshold,  # percentage points
        "devices": [asdict(o) for o in outcomes],
        "measurements": list(measurements),
        "regressions": sum(map(is_regression, measurements)),
        # ran ok with nothing to compare with (no baseline; new since it), or nothing it could
        # be judged against (another ISA, ...): said, not passed
        "not_gated": sum(1 for m in measurements if m.get("not_gated")),
        # measured another file than its baseline under the same name (rebuilt since): its
        # verdicts judge the new file as much as the board, which the page and console say
        "rebuilt": rebuilt(measurements),
        "fingerprint_differences": fingerprint_differences,
        # suite entries that did not build, so were measured nowhere
        "build_failures": [{"entry": entry, "error": error} for entry, error in build_failures],
    }


def rebuilt(measurements: Sequence[dict[str, Any]]) -> list[str]:
    """"device: model (format, runtime)" of each measurement whose file is another than its
    baseline's under the same name (`file_changed`: the sha256 differs)."""
    return [f"{m['device']}: {m['model']} ({m['format']}, {m['runtime']})"
            for m in measurements if m.get("file_changed")]


def write_junit(path: Path, summary: dict[str, Any]) -> Path:
    root = ET.Element("testsuites", name=f"edgebench nightly {summary['nightly_id']}")
    by_device: dict[str, list[dict[str, Any]]] = {}
    for m in summary["measurements"]:
        by_device.setdefault(str(m["device"]), []).append(m)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for device in summary["devices"]:
        suite = ET.SubElement(root, "testsuite", name=device["name"])
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        cases = by_device.get(device["name"], [])
        if device["status"] != "ok" and not [m for m in cases if m.get("status_b")]:
            cases = cases or [{"model": "device", "format": "-", "runtime": "-",
                               "threads": None, "status_b": None, "verdict": None}]
        for m in cases:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", name=case_name(m),
                                 classname=f"edgebench.{device['name']}")
            if m.get("median_b_ms") is not None:
                case.set("time", "0")
                ET.SubElement(case, "system-out").text = _figures(m)
            if device["status"] == "skipped" and not m.get("status_b"):
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=device["message"])
            elif failing := failing_verdicts(m):
                counts["failures"] += 1
                what = failing[0]  # the speed's verdict first
                ET.SubElement(case, "failure", message=f"{what}: {_figures(m)}", type=str(what))
            elif m.get("status_b") != "ok":
                counts["errors"] += 1
                why = device["message"] if device["status"] != "ok" else m.get("status_b")
                ET.SubElement(case, "error", message=str(why or "not measured"),
                              type=str(m.get("status_b") or device["status"]))
            elif m.get("not_gated"):  # measured, but no verdict: said, not passed
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=f"not gated: {m['not_gated']}")
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    failed_builds = summary.get("build_failures") or []
    if failed_builds:  # a failed case each: CI shows what was never measured, and why
        suite = ET.SubElement(root, "testsuite", name="suite build", tests=str(len(failed_builds)),
                              failures=str(len(failed_builds)), errors="0", skipped="0")
        for failed in failed_builds:
            case = ET.SubElement(suite, "testcase", name=str(failed["entry"]),
                                 classname="edgebench.build")
            ET.SubElement(case, "failure", message=str(failed["error"]), type="build failed")
        totals["tests"] += len(failed_builds)
        totals["failures"] += len(failed_builds)
    for key, value in totals.items():
        root.set(key, str(value))
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _figures(m: dict[str, Any]) -> str:
    text = f"median {m['median_b_ms']:.4g} ms" if m.get("median_b_ms") is not None else \
        "not measured"
    if m.get("median_a_ms") is not None:
        text += f", baseline {m['median_a_ms']:.4g} ms"
    if m.get("ratio") is not None:  # no interval with one session a side
        text += ", ratio " + format_interval(m["ratio"], m.get("ratio_ci95_low"),
                                             m.get("ratio_ci95_high"), ".3f")
    if m.get("top1_a") is not None and m.get("top1_b") is not None:
        text += f", top-1 {100 * m['top1_a']:.1f}% -> {100 * m['top1_b']:.1f}%"
        if m.get("accuracy_verdict") in TOP1_CHANGES:
            text += f" ({m['accuracy_verdict']})"
    if m.get("isa_b"):
        text += f" (ISA {m['isa_b']})"
    if m.get("error_b"):
        text += f"; {m['status_b']}: {m['error_b']}"
    if m.get("file_changed"):
        text += "; another file than the baseline's (rebuilt since)"
    if m.get("verdict"):
        text += f"; speed: {m['verdict']}"
    return text
