"""The nightly's verdict, from a real SQLite store: the gate's rule for failures with nothing to
compare with, the exit code and what it means, the JUnit failure, and the status block that opens
`index.html` (escaped: names come from model files and the farm file). The same through a real
labgrid farm is in tests/test_farm.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from harness.farm.command import _gate
from harness.farm.nightly import EXIT_OK, EXIT_REGRESSION, DeviceOutcome, exit_code
from harness.farm.summary import summary_document, write_junit
from harness.report.compare import is_regression
from harness.report.nightly import write_trend
from harness.store import Store
from tests.test_report_synthetic import ISA, add_job, sessions_ns

COMMAND = "edgebench nightly --farm devices/farm.yaml --suite models/demo.yaml"
HOSTILE = "<img src=x onerror=alert(1)>"


def _night(store: Store, night: int) -> str:
    run = store.begin_run(COMMAND, "models/demo.yaml", ["pi5"])
    with store.transaction() as conn:  # a night apart, as the trend orders them
        conn.execute("UPDATE runs SET started_at = ? WHERE run_id = ?",
                     (f"2026-12-{night:02d}T02:00:00Z", run))
    return run


def _summary(store: Store, baseline: str | None, run: str, outcomes: list[DeviceOutcome],
             fail_on_regression: bool = True) -> dict[str, Any]:
    measurements, differences = _gate(store, baseline, run, 0.05)
    regressions = sum(map(is_regression, measurements))
    code, meaning = exit_code(outcomes, regressions, fail_on_regression)
    return summary_document(nightly_id=run, baseline=baseline, status="finished",
                            exit_code=code, exit_meaning=meaning,
                            fail_on_regression=fail_on_regression, outcomes=outcomes,
                            measurements=measurements, fingerprint_differences=differences,
                            threshold=0.05)


def _ok(name: str = "pi5") -> DeviceOutcome:
    return DeviceOutcome(name, name, status="ok", attempts=1, sessions_run=5)


def test_a_failure_in_the_first_nightly_is_newly_failing_and_fails_the_gate(tmp_path: Path
                                                                             ) -> None:
    store = Store(tmp_path / "db.sqlite")
    first = _night(store, 1)
    add_job(store, first, "resnet", samples_ns=sessions_ns(20.0, seed=1))
    add_job(store, first, "resnet-int8", baseline="resnet", status="failed",
            error_message="resnet-int8.onnx: INVALID_PROTOBUF")
    store.finish_run(first)

    summary = _summary(store, None, first, [_ok()])
    verdicts = {m["model"]: m["verdict"] for m in summary["measurements"]}
    assert verdicts == {"resnet": None, "resnet-int8": "newly failing"}
    failing = next(m for m in summary["measurements"] if m["model"] == "resnet-int8")
    assert failing["error_b"] == "resnet-int8.onnx: INVALID_PROTOBUF"
    assert summary["regressions"] == 1
    assert summary["exit_code"] == EXIT_REGRESSION
    assert "1 regressions, and --fail-on-regression" in summary["exit_meaning"]
    # without --fail-on-regression the run passes, and says why a regression did not stop it
    quiet = _summary(store, None, first, [_ok()], fail_on_regression=False)
    assert quiet["exit_code"] == EXIT_OK and "only with --fail-on-regression" in \
        quiet["exit_meaning"]

    junit = ET.parse(write_junit(tmp_path / "junit.xml", summary)).getroot()
    (failure,) = junit.findall(".//testcase/failure")
    assert failure.get("type") == "newly failing"
    assert "INVALID_PROTOBUF" in (failure.get("message") or "")
    assert junit.get("failures") == "1" and junit.get("errors") == "0"


def test_a_later_nightly_judges_new_and_old_failures(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    first = _night(store, 1)
    add_job(store, first, "resnet", samples_ns=sessions_ns(20.0, between_sd=0.01, seed=1))
    add_job(store, first, "resnet-int8", baseline="resnet", status="failed")
    store.finish_run(first)
    second = _night(store, 2)
    add_job(store, second, "resnet", samples_ns=sessions_ns(30.0, between_sd=0.01, seed=2))
    add_job(store, second, "resnet-int8", baseline="resnet", status="failed")
    add_job(store, second, "mobilenet", status="failed")  # new in the suite, and failing
    store.finish_run(second)

    summary = _summary(store, first, second, [_ok()])
    verdicts = {m["model"]: m["verdict"] for m in summary["measurements"]}
    # failing in both is no news; failing with no baseline measurement never ran ok before
    assert verdicts == {"resnet": "slower", "resnet-int8": "not measured",
                        "mobilenet": "newly failing"}
    assert summary["regressions"] == 2 and summary["exit_code"] == EXIT_REGRESSION


def test_the_page_opens_with_the_verdict_and_escapes_names(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    nights = []
    for night, median in enumerate((20.0, 20.2, 30.0), start=1):
        run = _night(store, night)
        add_job(store, run, HOSTILE, samples_ns=sessions_ns(median, between_sd=0.01, seed=night))
        add_job(store, run, "resnet", samples_ns=sessions_ns(10.0, between_sd=0.01, seed=9))
        if night == 3:
            add_job(store, run, "mobilenet", status="failed",
                    error_message=f"{HOSTILE} is not a model")
        store.finish_run(run)
        nights.append(run)
    held = DeviceOutcome("rpi-7", "rpi-7", status="skipped",
                         message="labgrid place rpi-7 is held by vm/<script>alert(1)</script>")
    summary = _summary(store, nights[1], nights[2], [_ok(), held])
    out = tmp_path / "out"
    write_trend(store, nights[2], nights, ["pi5"], out, summary=summary)
    page = (out / "index.html").read_text()

    assert "<script>" not in page and HOSTILE not in page
    assert "vm/&lt;script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    # the verdict comes before the figures and the table
    status = page[page.index("<div class=status>"):page.index("</div>")]
    assert page.index("<div class=status>") < page.index("<img src=")
    assert "Exit code 3" in status and "rpi-7 skipped" in status
    assert f"Baseline: nightly {nights[1]}" in status
    assert "Devices: 1 ok, 0 failed, 1 skipped" in status
    assert "held by vm/&lt;script&gt;" in status
    assert "1 slower" in status and "1 newly failing" in status and "1 inconclusive" in status
    slower = next(m for m in summary["measurements"] if m["verdict"] == "slower")
    assert slower["model"] == HOSTILE
    assert (f"{slower['ratio']:.3f} [{slower['ratio_ci95_low']:.3f}, "
            f"{slower['ratio_ci95_high']:.3f}]") in status
    assert ISA in status
    assert "failed: &lt;img src=x onerror=alert(1)&gt; is not a model" in status
    assert '<a href="summary.json">' in status and '<a href="junit.xml">' in status


def test_the_page_shows_a_top1_change_of_one_image_or_more(tmp_path: Path) -> None:
    """The same 1000 images each night: 4 fewer right is shown as a change in points, in red,
    only in the nightly where it happened; the same top-1 or a change under one image is not."""
    store = Store(tmp_path / "x.db")
    runs = []
    for night, (steady, dropped) in enumerate(((0.70, 0.80), (0.70, 0.80), (0.7002, 0.796),
                                               (0.70, 0.796)), start=1):
        run = _night(store, night)
        add_job(store, run, "steady", accuracy_top1=steady, accuracy_n=1000,
                samples_ns=sessions_ns(5.0, seed=night))
        add_job(store, run, "dropped", accuracy_top1=dropped, accuracy_n=1000,
                samples_ns=sessions_ns(7.0, seed=10 + night))
        store.finish_run(run)
        runs.append(run)
    write_trend(store, runs[-1], runs, ["pi5"], tmp_path / "out")
    page = (tmp_path / "out" / "index.html").read_text()
    rows = {row.split("</td>")[1].removeprefix("<td>"): row for row in page.split("<tr>")[2:]}
    assert rows["dropped"].count("points") == 1
    assert "top-1 0.796 <span class=bad>-0.4 points</span>" in rows["dropped"]
    assert "points" not in rows["steady"]  # 0.2 of an image is rounding, not a change


def test_fewer_images_right_fails_the_gate_and_is_shown(tmp_path: Path) -> None:
    """A runtime update on a board that costs an int8 model 4 of the same 1000 images fails the
    nightly as a regression, at the same speed; junit and the page say what changed."""
    store = Store(tmp_path / "db.sqlite")
    runs = []
    for night, top1 in enumerate((0.700, 0.696), start=1):
        run = _night(store, night)
        add_job(store, run, "resnet", accuracy_top1=0.75, accuracy_n=1000,
                samples_ns=sessions_ns(20.0, between_sd=0.01, seed=night))
        add_job(store, run, "resnet-int8", baseline="resnet", accuracy_top1=top1,
                accuracy_n=1000, samples_ns=sessions_ns(8.0, between_sd=0.01, seed=10 + night))
        store.finish_run(run)
        runs.append(run)
    summary = _summary(store, runs[0], runs[1], [_ok()])
    top1 = {m["model"]: m["accuracy_verdict"] for m in summary["measurements"]}
    assert top1 == {"resnet": "same top-1", "resnet-int8": "lower top-1"}
    assert all(m["verdict"] != "slower" for m in summary["measurements"])
    assert summary["regressions"] == 1 and summary["exit_code"] == EXIT_REGRESSION

    junit = ET.parse(write_junit(tmp_path / "junit.xml", summary)).getroot()
    (failure,) = junit.findall(".//testcase/failure")
    assert failure.get("type") == "lower top-1"
    assert "top-1 70.0% -> 69.6% (lower top-1)" in (failure.get("message") or "")

    write_trend(store, runs[1], runs, ["pi5"], tmp_path / "out", summary=summary)
    page = (tmp_path / "out" / "index.html").read_text()
    assert "<span class=bad>1 lower top-1</span>" in page
    regressions = page.split("<h2>Regressions</h2>")[1].split("</table>")[0]
    assert "resnet-int8" in regressions and "top-1 70.0% &rarr; 69.6%" in regressions
    assert regressions.count("<tr>") == 2  # the header and the one regression
