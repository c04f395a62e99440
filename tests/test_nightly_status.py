"""The nightly's verdict, from a real SQLite store: the gate's rule for failures with nothing to
compare with, the exit code and what it means, the JUnit failure, and the status block that opens
`index.html` (escaped: names come from model files and the farm file). The same through a real
labgrid farm is in tests/test_farm.py."""

from __future__ import annotations

import dataclasses
import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.artifacts import Artifact
from harness.bench import plan_record, what_record
from harness.config import DeviceProfile
from harness.errors import EdgebenchError
from harness.farm.command import _gate, _not_gated_kind
from harness.farm.nightly import (
    EXIT_NOT_MEASURED,
    EXIT_OK,
    EXIT_REGRESSION,
    DeviceOutcome,
    check_baseline,
    check_resume,
    exit_code,
    latest,
    measurement_keys,
    previous_baselines,
)
from harness.farm.summary import summary_document, write_junit
from harness.report.compare import is_regression
from harness.report.nightly import status_block, write_trend
from harness.runner import BenchOptions, PlannedJob
from harness.store import Store
from tests.test_report_synthetic import FINGERPRINT, ISA, add_job, exact_median_ns, sessions_ns

COMMAND = "edgebench nightly --farm devices/farm.yaml --suite models/demo.yaml"
HOSTILE = "<img src=x onerror=alert(1)>"


def _night(store: Store, night: int, devices: tuple[str, ...] = ("pi5",),
           command: str = COMMAND) -> str:
    run = store.begin_run(command, "models/demo.yaml", list(devices))
    with store.transaction() as conn:  # a night apart, as the trend orders them
        conn.execute("UPDATE runs SET started_at = ? WHERE run_id = ?",
                     (f"2026-12-{night:02d}T02:00:00Z", run))
    return run


def _summary(store: Store, baseline: str | None, run: str, outcomes: list[DeviceOutcome],
             fail_on_regression: bool = True,
             baselines: dict[str, str | None] | None = None) -> dict[str, Any]:
    """The nightly's summary as `nightly` makes it; `baselines` by device (default: `baseline`
    for every device)."""
    baselines = baselines or {o.name: baseline for o in outcomes}
    measurements, differences = _gate(store, baselines, run, 0.05)
    regressions = sum(map(is_regression, measurements))
    code, meaning = exit_code(outcomes, regressions, fail_on_regression, (),
                              [_not_gated_kind(m) for m in measurements if m.get("not_gated")])
    return summary_document(nightly_id=run, baseline=latest(store, baselines.values()),
                            baselines=baselines, status="finished",
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
    assert "1 regression, and --fail-on-regression" in summary["exit_meaning"]
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


def test_the_page_shows_a_top1_change_by_the_gates_rule_and_threshold(tmp_path: Path) -> None:
    """Found in a review: the page showed any change of one image, under the gate's threshold
    (`--top1-threshold`, which never reached the page), and changes on other images (another
    count), which the gate does not compare: the page said "-0.1 points" in red where the gate
    said "same top-1". It shows a change by the gate's rule and threshold."""
    store = Store(tmp_path / "x.db")
    runs = []
    for night, (one, other, n) in enumerate(((0.7, 0.70, 1000), (0.6992, 0.68, 500)), start=1):
        run = _night(store, night)  # "one": 8 of the same 10,000 images, 0.08 points
        add_job(store, run, "one", accuracy_top1=one, accuracy_n=10_000,
                samples_ns=sessions_ns(5.0, seed=night))
        add_job(store, run, "other", accuracy_top1=other, accuracy_n=n,
                samples_ns=sessions_ns(7.0, seed=10 + night))
        store.finish_run(run)
        runs.append(run)
    summary = _summary(store, runs[0], runs[1], [_ok()])
    assert {m["model"]: m["accuracy_verdict"] for m in summary["measurements"]} == {
        "one": "same top-1", "other": "other images"}

    def rows(out: Path) -> dict[str, str]:
        page = (out / "index.html").read_text().split("<h2>Trends</h2>")[1]
        return {row.split("</td>")[1].removeprefix("<td>"): row for row in page.split("<tr>")[2:]}

    write_trend(store, runs[-1], runs, ["pi5"], tmp_path / "out", summary=summary)
    shown = rows(tmp_path / "out")
    assert "points" not in shown["one"] and "points" not in shown["other"]
    write_trend(store, runs[-1], runs, ["pi5"], tmp_path / "low", top1_threshold=0.05)
    shown = rows(tmp_path / "low")
    assert "top-1 0.699 <span class=bad>-0.1 points</span>" in shown["one"]
    assert "points" not in shown["other"]
    assert "more than 0.05 points" in (tmp_path / "low" / "index.html").read_text()


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


RESNET = {(device, "resnet", "onnx", "onnxruntime", 4, 1) for device in ("pi5", "rpi5")}


def test_previous_is_each_devices_last_nightly_that_measured_it_ok(tmp_path: Path) -> None:
    """A nightly interrupted before it stored anything, and one in which rpi5 failed, are not
    the baseline of what they did not measure: each board is compared with its last good night
    (a bench run on the board in between is no nightly)."""
    store = Store(tmp_path / "db.sqlite")
    boards = ("pi5", "rpi5")
    first = _night(store, 1, boards)
    for board, median in (("pi5", 20.0), ("rpi5", 40.0)):
        add_job(store, first, "resnet", device=board,
                samples_ns=sessions_ns(median, between_sd=0.01, seed=1))
    store.finish_run(first)
    second = _night(store, 2, boards)  # rpi5 failed: unreachable all night
    add_job(store, second, "resnet", device="pi5",
            samples_ns=sessions_ns(20.0, between_sd=0.01, seed=2))
    add_job(store, second, "resnet", device="rpi5", status="failed", error_kind="transport",
            error_message="rpi5: connection refused")
    store.finish_run(second, "incomplete")
    bench = _night(store, 3, ("pi5",), command="edgebench bench --device pi5 --model r.onnx")
    add_job(store, bench, "resnet", samples_ns=sessions_ns(20.0, between_sd=0.01, seed=3))
    store.finish_run(bench)
    empty = _night(store, 4, boards)  # Ctrl-C before its first session ended
    store.finish_run(empty, "interrupted")
    now = _night(store, 5, boards)
    for board, median in (("pi5", 20.0), ("rpi5", 40.0)):
        add_job(store, now, "resnet", device=board,
                samples_ns=sessions_ns(median, between_sd=0.01, seed=5))
    store.finish_run(now)

    baselines = previous_baselines(store, now, RESNET)
    assert baselines == {"pi5": second, "rpi5": first}
    summary = _summary(store, None, now, [_ok("pi5"), _ok("rpi5")], baselines=baselines)
    by_board = {m["device"]: m for m in summary["measurements"]}
    assert {m["baseline_run"] for m in by_board.values()} == {first, second}
    assert by_board["rpi5"]["baseline_run"] == first and by_board["rpi5"]["job_id_a"]
    assert {m["verdict"] for m in summary["measurements"]} <= {
        "no change", "inconclusive", "faster", "slower"}  # compared, not "only in B"
    assert summary["not_gated"] == 0 and summary["baseline"] == second
    assert summary["baselines"] == {"pi5": second, "rpi5": first}
    out = tmp_path / "out"
    write_trend(store, now, [first, second, empty, now], list(boards), out, summary=summary)
    page = (out / "index.html").read_text()
    assert (f"Baseline: each device's last nightly that measured it ok: pi5 {second}, "
            f"rpi5 {first}") in page

    # no earlier nightly measured anything ok on a board new to the farm: nothing to compare
    assert previous_baselines(store, now, RESNET | {("orin", "resnet", "onnx", "onnxruntime",
                                                     4, 1)})["orin"] is None


def test_a_measurement_with_nothing_to_compare_with_is_said_not_gated(tmp_path: Path) -> None:
    """A measurement that ran ok with no baseline measurement (the first nightly, a model new
    since the baseline) gets no verdict: that is said in summary.json, junit.xml (skipped, with
    why), the page and the exit code's meaning, rather than passing in silence. It is a caveat,
    not a failure: a first nightly passes."""
    store = Store(tmp_path / "db.sqlite")
    first = _night(store, 1)
    add_job(store, first, "resnet", samples_ns=sessions_ns(20.0, between_sd=0.01, seed=1))
    store.finish_run(first)
    summary = _summary(store, None, first, [_ok()])
    (m,) = summary["measurements"]
    assert m["verdict"] is None and m["not_gated"] == (
        "no baseline: no earlier nightly measured pi5 ok")
    assert summary["not_gated"] == 1 and summary["regressions"] == 0
    assert summary["exit_code"] == EXIT_OK
    assert summary["exit_meaning"] == ("every device measured and no regression; 1 measurement "
                                       "not gated, with no baseline measurement to compare with")
    junit = ET.parse(write_junit(tmp_path / "first.xml", summary)).getroot()
    (skipped,) = junit.findall(".//testcase/skipped")
    assert skipped.get("message") == "not gated: no baseline: no earlier nightly measured pi5 ok"
    assert junit.get("skipped") == "1" and junit.get("failures") == "0"

    second = _night(store, 2)
    add_job(store, second, "resnet", samples_ns=sessions_ns(20.0, between_sd=0.01, seed=2))
    add_job(store, second, "mobilenet", samples_ns=sessions_ns(8.0, between_sd=0.01, seed=3))
    store.finish_run(second)
    summary = _summary(store, first, second, [_ok()])
    gated = {m["model"]: m.get("not_gated") for m in summary["measurements"]}
    assert gated == {"resnet": None,
                     "mobilenet": f"no baseline measurement: not in {first}, the baseline of pi5"}
    assert summary["not_gated"] == 1 and summary["exit_code"] == EXIT_OK
    out = tmp_path / "out"
    write_trend(store, second, [first, second], ["pi5"], out, summary=summary)
    page = (out / "index.html").read_text()
    status = page[page.index("<div class=status>"):page.index("</div>")]
    assert (f"Not gated: 1 measurement ran ok with no baseline measurement they can be judged "
            f"against (1: no baseline measurement: not in {first}, the baseline of pi5)") in status


def test_a_nightly_whose_suite_was_edited_is_not_taken_up(tmp_path: Path) -> None:
    """`--id` after the suite changed would measure its rebuilt models beside the old ones in one
    nightly; refused as `bench --resume` refuses an edited suite. The same suite is taken up."""
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\n")
    options = BenchOptions(quick=True)
    store = Store(tmp_path / "x.db")
    store.begin_run(f"edgebench nightly --farm f.yaml --suite {suite}", str(suite), ["pi5"],
                    run_id="nightly-x",
                    plan=plan_record([], options, what_record(suite, None), None))
    assert check_resume(store, "nightly-x", str(suite), ["pi5"], options) is not None
    suite.write_text("name: s\nseed: 1\n")
    with pytest.raises(EdgebenchError, match=rf"nightly nightly-x: suite {suite} changed since "
                                             r"the nightly began \(sha256 \w{12} then, \w{12} "
                                             r"now\); run a new nightly \(without --id\)"):
        check_resume(store, "nightly-x", str(suite), ["pi5"], options)
    store.close()


def test_a_nightly_whose_samples_were_pruned_is_not_taken_up(tmp_path: Path) -> None:
    """`--id` on a nightly whose unfinished measurement has stored sessions with pruned samples
    (`db prune`) would pool the new sessions' samples beside the old sessions' medians; refused
    at once, as `bench --resume` refuses it, not after the farm's places are reserved."""
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\n")
    options = BenchOptions(quick=True, sessions=5)
    store = Store(tmp_path / "x.db")
    plan = plan_record([], options, what_record(suite, None), None)
    store.begin_run(f"edgebench nightly --farm f.yaml --suite {suite}", str(suite), ["pi5"],
                    run_id="nightly-x", plan=plan)
    job = add_job(store, "nightly-x", "resnet", samples_ns=sessions_ns(20.0, sessions=2))
    store.set_run_plan("nightly-x", {**plan, "jobs": [
        {"job_id": job, "device": "pi5", "model": "resnet", "runtime": "onnxruntime"}]})
    store.finish_run("nightly-x", "interrupted")
    assert check_resume(store, "nightly-x", str(suite), ["pi5"], options) is not None
    store.prune_samples("0")
    with pytest.raises(EdgebenchError, match=r"nightly nightly-x cannot be resumed: the raw "
                                             r"samples of 2 stored sessions of resnet on "
                                             r"onnxruntime on pi5 were pruned .* run a new "
                                             r"nightly \(without --id\)$"):
        check_resume(store, "nightly-x", str(suite), ["pi5"], options)
    store.close()


def test_a_nightly_still_being_measured_is_not_taken_up(tmp_path: Path) -> None:
    """`--id` of a nightly whose process still runs on this host (a manual start while the
    timer's nightly runs) is refused as `bench --resume` refuses it, naming the process; once
    that process is gone (killed: what `--id` is for) it is taken up."""
    import socket
    import subprocess
    import sys

    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\n")
    options = BenchOptions(quick=True)
    store = Store(tmp_path / "x.db")
    plan = plan_record([], options, what_record(suite, None), None)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "edgebench"])
    try:
        store.begin_run(f"edgebench nightly --farm f.yaml --suite {suite}", str(suite), ["pi5"],
                        run_id="nightly-x", plan={**plan, "process": {
                            "host": socket.gethostname(), "pid": other.pid}})
        with pytest.raises(EdgebenchError, match=rf"^nightly nightly-x is still being measured "
                                                 rf"by process {other.pid} on this host; stop "
                                                 r"it first"):
            check_resume(store, "nightly-x", str(suite), ["pi5"], options)
    finally:
        other.kill()
        other.wait()
    assert check_resume(store, "nightly-x", str(suite), ["pi5"], options) is not None
    store.close()


def test_a_nightly_of_one_session_gets_its_junit_and_page(tmp_path: Path) -> None:
    """`nightly --sessions 1`: a ratio whose interval needs two sessions a side has none. The
    JUnit case and the page say the ratio alone; the JUnit writer formatted the missing bounds
    by hand and failed the nightly at its very end."""
    store = Store(tmp_path / "db.sqlite")
    first = _night(store, 1)
    add_job(store, first, "resnet", samples_ns=sessions_ns(20.0, sessions=1, seed=1))
    store.finish_run(first)
    second = _night(store, 2)
    add_job(store, second, "resnet", samples_ns=sessions_ns(30.0, sessions=1, seed=2))
    store.finish_run(second)
    summary = _summary(store, first, second, [_ok()])
    ((m,),) = [summary["measurements"]]
    assert m["ratio"] is not None and m["ratio_ci95_low"] is None
    junit = ET.parse(write_junit(tmp_path / "junit.xml", summary)).getroot()
    (out,) = [e.text or "" for e in junit.iter("system-out")]
    assert f"ratio {m['ratio']:.3f} (ISA" in out and out.endswith("; speed: inconclusive")
    write_trend(store, second, [first, second], ["pi5"], tmp_path / "out", summary=summary)
    store.close()


def test_a_device_down_does_not_hide_a_regression_of_another(tmp_path: Path) -> None:
    """Exit 3 says something was not measured; the meaning says the regression beside it (the
    reader of a cron mail or of the page must not take the night for "only a board down")."""
    store = Store(tmp_path / "db.sqlite")
    first = _night(store, 1, ("pi5", "jetson"))
    add_job(store, first, "resnet", samples_ns=sessions_ns(20.0, between_sd=0.01, seed=1))
    store.finish_run(first)
    second = _night(store, 2, ("pi5", "jetson"))
    add_job(store, second, "resnet", samples_ns=sessions_ns(30.0, between_sd=0.01, seed=2))
    store.finish_run(second, "incomplete")
    down = DeviceOutcome("jetson", "jetson", status="failed", attempts=3,
                         message="127.0.0.1: connection refused")
    summary = _summary(store, first, second, [_ok(), down])
    assert summary["regressions"] == 1 and summary["exit_code"] == EXIT_NOT_MEASURED
    meaning = summary["exit_meaning"]
    assert "1 of 2 devices not measured (jetson failed)" in meaning
    assert "with 1 regression" in meaning, meaning
    # without --fail-on-regression the meaning says it would not fail the run by itself
    code, meaning = exit_code([_ok(), down], 1, False)
    assert code == EXIT_NOT_MEASURED and "1 regression, which fails a run only with " \
        "--fail-on-regression" in meaning


def test_a_board_of_another_instruction_set_is_not_gated(tmp_path: Path) -> None:
    """A board replaced by one of another ISA measures the same model, but its speed cannot be
    judged against the old board's: not gated, with why, a skipped JUnit case and the exit
    code's meaning saying so; not "every device measured and no regression" in silence."""
    store = Store(tmp_path / "db.sqlite")
    first = _night(store, 1)
    add_job(store, first, "resnet", samples_ns=sessions_ns(20.0, between_sd=0.01, seed=1))
    store.finish_run(first)
    second = _night(store, 2)
    add_job(store, second, "resnet", samples_ns=sessions_ns(20.0, between_sd=0.01, seed=2),
            fingerprint=dict(FINGERPRINT, isa="x86 avx2 fma"))
    add_job(store, second, "mobilenet", samples_ns=sessions_ns(8.0, between_sd=0.01, seed=3),
            fingerprint=dict(FINGERPRINT, isa="x86 avx2 fma"))
    store.finish_run(second)
    summary = _summary(store, first, second, [_ok()])
    why = {m["model"]: m.get("not_gated") for m in summary["measurements"]}
    assert why == {
        "resnet": f"different instruction set ({ISA} in {first}, x86 avx2 fma now): its speed "
                  f"cannot be judged against {first}",
        "mobilenet": f"no baseline measurement: not in {first}, the baseline of pi5"}
    assert summary["not_gated"] == 2 and summary["regressions"] == 0
    assert summary["exit_code"] == EXIT_OK
    assert summary["exit_meaning"] == (
        "every device measured and no regression; 2 measurements not gated (1 with no "
        "baseline measurement to compare with, 1 on another instruction set than its baseline)")
    junit = ET.parse(write_junit(tmp_path / "junit.xml", summary)).getroot()
    skipped = {c.get("name", "").split()[0]: c.find("skipped")
               for c in junit.iter("testcase")}
    assert skipped["resnet"] is not None and skipped["resnet"].get("message") == (
        f"not gated: {why['resnet']}")
    assert junit.get("skipped") == "2" and junit.get("failures") == "0"


def test_every_reason_a_pair_is_not_judged_is_not_gated() -> None:
    from harness.farm.command import UNJUDGED
    from harness.report import compare

    assert set(UNJUDGED) == {compare.DIFFERENT_ISA, compare.DIFFERENT_ACCELERATOR,
                             compare.DIFFERENT_PRECISION, compare.DIFFERENT_SCOPE, compare.MIXED,
                             compare.NOT_MEASURED}
    for verdict, kind in UNJUDGED.items():
        row = {"verdict": verdict, "status_b": "ok", "baseline_run": "n1", "device": "pi5"}
        assert _not_gated_kind(row) == kind
        code, meaning = exit_code([_ok()], 0, True, (), [kind])
        assert code == EXIT_OK and meaning.endswith(f"1 measurement not gated, {kind}")


def test_a_model_moved_onto_a_gpu_is_not_gated_naming_both_sides(tmp_path: Path) -> None:
    """A profile that moves a model onto the GPU: not gated, and why names what ran it on each
    side, "none" where nothing did (the reason wrote Python's None), as the compare table does
    (`compare.unjudged_sides`, one map of verdicts to columns)."""
    gpu = "NVIDIA H200 (sm 9.0, 132 SMs)"
    store = Store(tmp_path / "db.sqlite")
    first = _night(store, 1)
    add_job(store, first, "resnet", samples_ns=sessions_ns(20.0, between_sd=0.01, seed=1))
    store.finish_run(first)
    second = _night(store, 2)
    add_job(store, second, "resnet", samples_ns=sessions_ns(5.0, between_sd=0.01, seed=2),
            accelerator=gpu)
    store.finish_run(second)
    summary = _summary(store, first, second, [_ok()])
    (m,) = summary["measurements"]
    assert m["not_gated"] == (f"different accelerator (none in {first}, {gpu} now): its speed "
                              f"cannot be judged against {first}")
    assert summary["exit_meaning"].endswith(
        "1 measurement not gated, on another accelerator than its baseline")


def test_an_ok_measurement_with_no_usable_session_is_not_gated(tmp_path: Path) -> None:
    """Found in a review: a measurement that ran ok but whose every session median is 0 (a timer
    too coarse for the model) has no speed to judge: compare says "not measured", which the gate
    neither failed nor counted as not gated, and the night passed as "every device measured and
    no regression". It is not gated, saying which side has no usable median."""
    store = Store(tmp_path / "db.sqlite")
    first = _night(store, 1)
    add_job(store, first, "resnet", samples_ns=sessions_ns(20.0, between_sd=0.01, seed=1))
    add_job(store, first, "tiny", samples_ns=sessions_ns(0.5, between_sd=0.01, seed=3))
    store.finish_run(first)
    second = _night(store, 2)
    add_job(store, second, "resnet", samples_ns=sessions_ns(20.0, between_sd=0.01, seed=2))
    add_job(store, second, "tiny", samples_ns=[np.zeros(50, dtype=np.int64)] * 3)
    store.finish_run(second)
    summary = _summary(store, first, second, [_ok()])
    tiny = next(m for m in summary["measurements"] if m["model"] == "tiny")
    assert tiny["status_b"] == "ok" and tiny["verdict"] == "not measured"
    assert tiny["not_gated"] == (f"not measured (no usable session median now): its speed "
                                 f"cannot be judged against {first}")
    assert summary["not_gated"] == 1 and summary["exit_code"] == EXIT_OK
    assert summary["exit_meaning"] == (
        "every device measured and no regression; 1 measurement not gated, with no usable "
        "session median, or a baseline without one")
    junit = ET.parse(write_junit(tmp_path / "junit.xml", summary)).getroot()
    assert junit.get("skipped") == "1" and junit.get("errors") == "0"


def test_the_page_shows_slower_where_the_gate_counts_slower(tmp_path: Path) -> None:
    """Found in a review: the page's table judged each measurement alone against the nightly
    before, so one index.html showed "slower" in red where its status block, from the gate
    (which judges a nightly's measurements together), counted it inconclusive. Of 30 models, one
    30% slower (slower alone, not among 30) and one 3x slower: one slower cell, one ring."""
    store = Store(tmp_path / "db.sqlite")
    nights = []
    for night in (1, 2):
        run = _night(store, night)
        for i in range(30):
            scale = {"m00": 1.3, "m01": 3.0}.get(f"m{i:02d}", 1.0) if night == 2 else 1.0
            add_job(store, run, f"m{i:02d}", samples_ns=[
                exact_median_ns(m * scale, seed=s) for s, m in enumerate([10.0, 10.1, 9.9, 10.0])])
        store.finish_run(run)
        nights.append(run)
    summary = _summary(store, nights[0], nights[1], [_ok()])
    verdicts = {m["model"]: m["verdict"] for m in summary["measurements"]}
    assert verdicts["m00"] == "inconclusive" and verdicts["m00"] != \
        next(m for m in summary["measurements"] if m["model"] == "m00")["verdict_alone"]
    write_trend(store, nights[1], nights, ["pi5"], tmp_path / "out", summary=summary)
    page = (tmp_path / "out" / "index.html").read_text()
    status, table = page.split("<h2>Trends</h2>")
    assert "<span class=bad>1 slower</span>" in status
    rows = {row.split("</td>")[1].removeprefix("<td>"): row for row in table.split("<tr>")[2:]}
    assert [model for model, row in rows.items() if "slower" in row] == ["m01"]


def _planned(device: str, model: str) -> PlannedJob:
    """A job of `model` on `device` as the nightly plans it (ONNX Runtime, batch 1)."""
    artifact = Artifact(name=model, path=Path(f"models/build/{model}.onnx"), format="onnx",
                        sha256=hashlib.sha256(model.encode()).hexdigest(), size_bytes=4_000_000,
                        technique="fp32", precision="fp32", base_model=model, baseline=None,
                        params=1_000_000, macs=300_000_000, input_shape=(1, 3, 224, 224))
    return PlannedJob(f"{device}-{model}", DeviceProfile(name=device, kind="rpi"), artifact,
                      "onnxruntime")


def test_the_baseline_is_a_nightly_of_the_same_threads_and_batch(tmp_path: Path) -> None:
    """Found in a review: the nightly found its baseline by device, model, format and runtime,
    compare paired on threads and batch too. After a night at --threads 2, the next night at 4
    threads took it for its baseline, paired nothing ("only in B", not gated) and passed; an
    explicit --baseline of it was accepted though it could gate nothing. The key is
    frame.JOB_KEYS, as compare's; threads the farm does not set match any until measured."""
    store = Store(tmp_path / "db.sqlite")
    four = _night(store, 1)
    add_job(store, four, "resnet", threads=4, samples_ns=sessions_ns(20.0, seed=1))
    store.finish_run(four)
    two = _night(store, 2)  # nightly --threads 2
    add_job(store, two, "resnet", threads=2, samples_ns=sessions_ns(30.0, seed=2))
    store.finish_run(two)
    now = _night(store, 3)
    jobs = [_planned("pi5", "resnet")]
    wanted = measurement_keys(jobs, BenchOptions(threads=4))
    assert wanted == {("pi5", "resnet", "onnx", "onnxruntime", 4, 1)}
    assert previous_baselines(store, now, wanted) == {"pi5": four}
    with pytest.raises(EdgebenchError, match=rf"--baseline {two}: it has no ok measurement of "
                                             r"a model this nightly measures \(same device, "
                                             r"model, format, runtime, threads and batch\)"):
        check_baseline(store, two, ["pi5"], wanted)
    check_baseline(store, four, ["pi5"], wanted)
    # threads neither --threads nor the farm file set: the agent's, known once measured
    unset = measurement_keys(jobs, BenchOptions())
    assert unset == {("pi5", "resnet", "onnx", "onnxruntime", None, 1)}
    assert previous_baselines(store, now, unset) == {"pi5": two}
    job_id = add_job(store, now, "resnet", threads=4, samples_ns=sessions_ns(20.0, seed=3))
    jobs = [dataclasses.replace(jobs[0], job_id=job_id)]
    measured = measurement_keys(jobs, BenchOptions(), store.results([now]))
    assert measured == wanted and previous_baselines(store, now, measured) == {"pi5": four}


def test_the_nightlys_docstring_names_every_verdict_that_fails_the_gate() -> None:
    """Found in a review: the module's definition of a regression left out lower top-1, which
    `is_regression` fails the gate on."""
    from harness.farm import nightly
    from harness.report import compare

    said = " ".join((nightly.__doc__ or "").split())
    for verdict in (*compare.FAILING_VERDICTS, compare.LOWER_TOP1):
        assert verdict.replace("slower", "slower beyond T") in said, verdict


def test_the_exit_meaning_counts_in_words_that_agree() -> None:
    """Found in a review: "1 regressions", "1 of 1 devices not measured"."""
    down = DeviceOutcome("pi5", "pi5", status="failed", attempts=3, message="refused")
    code, meaning = exit_code([down], 1, True)
    assert code == EXIT_NOT_MEASURED
    assert meaning.startswith("1 of 1 device not measured (pi5 failed); the rest is stored and "
                              "gated all the same, with 1 regression"), meaning
    code, meaning = exit_code([_ok(), _ok("rpi5")], 2, True)
    assert code == EXIT_REGRESSION and "every device measured; 2 regressions" in meaning


def test_a_bug_in_a_devices_nightly_writes_its_traceback(tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    """Found in a review: an exception no one foresaw (a bug on the host) failed the device with
    one line and logged nothing; its traceback goes to stderr now, as the agent's do."""
    import threading

    from harness.farm import nightly

    def bug(*_args: Any) -> None:
        raise KeyError("session")

    monkeypatch.setattr(nightly.resume, "sessions_by_job", bug)
    plan = nightly.NightlyPlan("nightly-x", (), BenchOptions(quick=True), "s.yaml", COMMAND)
    outcome = DeviceOutcome("pi5", None)
    said: list[str] = []
    nightly.run_device(tmp_path / "db.sqlite", plan, DeviceProfile(name="pi5", kind="rpi"),
                       None, outcome, threading.Event(), said.append)
    assert outcome.status == "failed"
    assert outcome.message == "KeyError: 'session' (on the host, in pi5's nightly)"
    err = capsys.readouterr().err
    assert err.startswith("edgebench: unexpected error in pi5's nightly:\nTraceback")
    assert "in bug\n" in err and err.endswith("KeyError: 'session'\n")


def test_a_model_rebuilt_since_its_baseline_is_said_on_the_page_and_in_junit(
        tmp_path: Path) -> None:
    """Found: a recipe changed between two nightlies (the same artifact name, another file)
    failed the gate on its lower top-1 while the page said the same file goes through the same
    images each night, so that the change was the board's; only summary.json's `file_changed`
    knew. `compare` says it in a line; the nightly now does too."""
    store = Store(tmp_path / "db.sqlite")
    first = _night(store, 1)
    add_job(store, first, "resnet", accuracy_top1=0.96, samples_ns=sessions_ns(20.0, seed=1))
    add_job(store, first, "mobilenet", samples_ns=sessions_ns(5.0, seed=3))
    store.finish_run(first)
    second = _night(store, 2)
    add_job(store, second, "resnet", accuracy_top1=0.09, samples_ns=sessions_ns(20.0, seed=2),
            model_sha256="f" * 64)
    add_job(store, second, "mobilenet", samples_ns=sessions_ns(5.0, seed=4))
    store.finish_run(second)
    summary = _summary(store, first, second, [_ok()])
    assert summary["rebuilt"] == ["pi5: resnet (onnx, onnxruntime)"]
    page = status_block(summary)
    assert "1 measurement measured another file than their baseline" in page
    assert "pi5: resnet (onnx, onnxruntime)" in page
    junit = ET.parse(write_junit(tmp_path / "junit.xml", summary)).getroot()
    (failure,) = junit.findall(".//testcase/failure")
    assert failure.get("type") == "lower top-1"
    assert "another file than the baseline's (rebuilt since)" in (failure.get("message") or "")
    store.close()
