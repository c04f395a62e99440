"""Reports of runs that are not complete, as a user meets them: interrupted after one of six
sessions, still being measured, interrupted before anything was stored, a nightly killed halfway.
Each says so at the top of the page, in the console, and in the paper's captions, with what it
holds of its plan and the command that completes it; only a finished run whose every planned
measurement is stored reads "Every job measured successfully"."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.report import run_report
from harness.store import Store
from tests.test_report_synthetic import add_job, sessions_ns

BENCH = "edgebench bench --suite models/demo.yaml --sessions 6"


def _plan(job_ids: list[str], sessions: int = 6) -> dict[str, Any]:
    """A bench's `runs.plan` as `bench.plan_bench` records it, as far as the report reads it."""
    return {"version": 1, "what": {"suite": "models/demo.yaml"},
            "options": {"sessions": sessions},
            "jobs": [{"job_id": j, "device": "pi5", "model": "net", "runtime": "onnxruntime"}
                     for j in job_ids]}


def _bench_run(path: Path, status: str, stored_sessions: int | None,
               suite: str | None = "models/demo.yaml") -> str:
    """A bench of one measurement planned at 6 sessions, `stored_sessions` of them stored
    (None: nothing), left with `status` ('running': not closed at all)."""
    store = Store(path)
    run = store.begin_run(BENCH, suite, ["pi5"])
    jobs = []
    if stored_sessions is not None:
        jobs.append(add_job(store, run, "net", sessions_planned=6, accuracy_top1=0.9,
                            samples_ns=sessions_ns(10.0, sessions=stored_sessions)))
    store.set_run_plan(run, _plan(jobs or [f"{run}-planned"]))
    if status != "running":
        store.finish_run(run, status)
    store.close()
    return run


def _page(folder: Path) -> str:
    return (folder / "index.html").read_text(encoding="utf-8")


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def _meta(page: str) -> str:
    return _text(page.split('<p class="meta">', 1)[1].split("</p>", 1)[0])


def _banner(page: str) -> str:
    assert 'id="incomplete"' in page
    return _text(page.split('id="incomplete">', 1)[1].split("</p>", 1)[0])


def test_an_interrupted_run_says_what_it_holds_and_how_to_complete_it(tmp_path: Path,
                                                                      capsys) -> None:
    """Found: `bench --sessions 6`, Ctrl-C after the first session: the report said "Jobs: 1 -
    1 ok ... Every job measured successfully"."""
    run = _bench_run(tmp_path / "x.db", "interrupted", stored_sessions=1)
    out = tmp_path / "out"
    assert main(["report", "--db", str(tmp_path / "x.db"), "--run", run, "--out",
                 str(out)]) == 0
    page = _page(out)
    assert "Every measurement succeeded" not in page
    banner = _banner(page)
    assert f"Run {run} was interrupted: 1 of 6 planned sessions stored" in banner, banner
    assert f"{BENCH} --resume {run} completes it" in banner, banner
    assert "<code>" in page.split('id="incomplete">', 1)[1].split("</p>", 1)[0]
    meta = _meta(page)
    assert meta.startswith("Started ") and ", interrupted 20" in meta, meta
    assert "not finished" not in meta and "status" not in meta
    err = capsys.readouterr().err
    assert f"run {run} was interrupted: 1 of 6 planned sessions stored".lower() in err.lower()
    assert f"--resume {run}" in err
    summary = (out / "tables" / "summary.md").read_text(encoding="utf-8")
    assert f"run {run}, which was interrupted: 1 of 6 planned sessions stored" in summary


def test_a_run_still_being_measured_reads_naturally(tmp_path: Path) -> None:
    """Found: "finished not finished, status running; suite ;" and "Every job measured
    successfully" for a run still being measured, with no suite."""
    run = _bench_run(tmp_path / "x.db", "running", stored_sessions=2, suite=None)
    out = run_report(tmp_path / "x.db", run, out=tmp_path / "out", say=lambda line: None)
    page = _page(out)
    meta = _meta(page)
    assert ", still running; command " in meta, meta
    assert "; suite" not in meta and "not finished" not in meta and "status" not in meta
    assert "Every measurement succeeded" not in page
    banner = _banner(page)
    assert "is still being measured: 2 of 6 planned sessions stored" in banner, banner
    assert f"If its process is gone (killed), {BENCH} --resume {run} completes it" in banner


def test_an_interrupted_run_with_nothing_stored_says_so_plainly(tmp_path: Path) -> None:
    """Found: "Jobs: 0 - no jobs ... Every job measured successfully"."""
    run = _bench_run(tmp_path / "x.db", "interrupted", stored_sessions=None)
    said: list[str] = []
    out = run_report(tmp_path / "x.db", run, out=tmp_path / "out", say=said.append)
    page = _page(out)
    assert "Every measurement succeeded" not in page and "no jobs" not in page
    assert "No measurement of this run is stored: it was interrupted." in _text(page)
    assert "nothing is measured yet of the 1 it planned" in _banner(page)
    assert len(said) == 1 and "was interrupted" in said[0]


def test_a_killed_nightly_names_its_id_to_complete_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    command = "edgebench nightly --farm devices/farm.yaml --suite models/demo.yaml"
    run = store.begin_run(command, "models/demo.yaml", ["pi5"], run_id="nightly-7")
    add_job(store, run, "net", sessions_planned=5, samples_ns=sessions_ns(10.0, sessions=3))
    store.finish_run(run, "interrupted")
    store.close()
    out = run_report(tmp_path / "x.db", run, out=tmp_path / "out", say=lambda line: None)
    banner = _banner(_page(out))
    assert "was interrupted: 3 of 5 planned sessions stored (1 measurement)" in banner, banner
    assert f"{command} --id nightly-7 completes it" in banner


def test_a_complete_run_has_no_banner(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    run = store.begin_run(BENCH, "models/demo.yaml", ["pi5"])
    job = add_job(store, run, "net", sessions_planned=6, samples_ns=sessions_ns(10.0, sessions=6))
    store.set_run_plan(run, _plan([job]))
    store.finish_run(run)
    store.close()
    said: list[str] = []
    out = run_report(tmp_path / "x.db", run, out=tmp_path / "out", say=said.append)
    page = _page(out)
    assert 'id="incomplete"' not in page and said == []
    assert "Every measurement succeeded." in page
    assert re.match(r"Started \S+, finished \S+; suite models/demo.yaml; command ", _meta(page))


@pytest.mark.parametrize("status, phrase", [("finished", "finished short of its plan"),
                                            ("incomplete", "ended incomplete")])
def test_a_run_short_of_its_plan_is_not_every_job(tmp_path: Path, status: str,
                                                  phrase: str) -> None:
    store = Store(tmp_path / "x.db")
    run = store.begin_run(BENCH, "models/demo.yaml", ["pi5"])
    job = add_job(store, run, "net", sessions_planned=6, samples_ns=sessions_ns(10.0, sessions=6))
    store.set_run_plan(run, _plan([job, f"{run}-lost-device"]))  # a second never began
    store.finish_run(run, status)
    store.close()
    page = _page(run_report(tmp_path / "x.db", run, out=tmp_path / "out",
                            say=lambda line: None))
    assert "Every measurement succeeded" not in page
    assert f"{phrase}: 6 of 12 planned sessions stored (1 of 2 measurements)" in _banner(page)
    assert "<b>Measurements:</b> 1 of 2 planned" in page


def test_the_paper_captions_say_the_run_is_incomplete(tmp_path: Path) -> None:
    run = _bench_run(tmp_path / "x.db", "interrupted", stored_sessions=2)
    out = run_report(tmp_path / "x.db", run, out=tmp_path / "out", style="paper",
                     say=lambda line: None)
    tex = (out / "paper" / "figures.tex").read_text(encoding="utf-8")
    captions = re.findall(r"^  \\caption\{(.*)\}$", tex, re.MULTILINE)
    assert captions
    for caption in captions:
        assert "was interrupted: 2 of 6 planned sessions stored" in caption
        assert "\\texttt{edgebench bench --suite models/demo.yaml --sessions 6 --resume" \
            in caption
    table = (out / "paper" / "summary.tex").read_text(encoding="utf-8")
    assert "which was interrupted: 2 of 6 planned sessions stored" in table


def test_a_run_whose_device_was_never_reached_holds_nothing_yet(tmp_path: Path) -> None:
    """Found: every measurement failed to reach its device (a closed port), and the report said
    "0 of 0 planned sessions stored (3 of 3 measurements). Its figures are of the sessions
    stored so far." and "0 sessions ... per measurement". Those measurements are still to be
    measured (`--resume` does): none is held yet."""
    store = Store(tmp_path / "x.db")
    run = store.begin_run(BENCH, "models/demo.yaml", ["pi5"])
    jobs = [add_job(store, run, name, status="failed", sessions_planned=2,
                    error_kind="connection_lost", error_message="cannot connect to pi5")
            for name in ("a", "b", "c")]
    store.set_run_plan(run, _plan(jobs, sessions=2))
    store.finish_run(run, "incomplete")
    store.close()
    said: list[str] = []
    out = run_report(tmp_path / "x.db", run, out=tmp_path / "out", say=said.append)
    banner = _banner(_page(out))
    assert "ended incomplete: nothing is measured yet of the 3 it planned" in banner, banner
    assert "figures are of the sessions stored so far" not in banner and "--resume" in banner
    summary = (out / "tables" / "summary.md").read_text()
    assert "0 sessions" not in summary
