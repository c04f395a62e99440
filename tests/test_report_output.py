"""`run_report`: the folder it writes, the figures in it, and figures that must not be drawn."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from harness.errors import StoreError
from harness.report import frame, plots, run_report
from harness.report.compare import SLOWER, verdicts_over_runs
from harness.store import Store
from tests.conftest import loaded_after_import
from tests.test_report_synthetic import add_job, demo_store, lognormal_ns, sessions_ns

ALL_PLOTS = (
    "accuracy_latency",
    "speedup_by_technique",
    "latency_distributions",
    "model_size",
    "memory",
    "speedup_heatmap",
    "trends",
)


def add_nightly_runs(store: Store, medians: list[float]) -> list[str]:
    """Later runs of resnet on pi5 with the given baseline medians, one per (fake) night."""
    runs = []
    for night, median in enumerate(medians):
        run = store.begin_run("edgebench nightly", "demo", ["pi5"])
        # begin_run stamps the current second; nightly runs are a day apart.
        with store.transaction() as conn:
            conn.execute(
                "UPDATE runs SET started_at = ? WHERE run_id = ?",
                (f"2026-12-{night + 1:02d}T02:00:00Z", run),
            )
        add_job(
            store,
            run,
            "resnet_18&v2",
            accuracy_top1=0.70,
            size_bytes=46_000_000,
            samples_ns=sessions_ns(median, between_sd=0.01, seed=300 + night),
        )
        add_job(
            store,
            run,
            "resnet_18&v2-int8",
            baseline="resnet_18&v2",
            accuracy_top1=0.69,
            samples_ns=sessions_ns(8.0, between_sd=0.01, seed=400 + night),
            size_bytes=11_800_000,
        )
        store.finish_run(run)
        runs.append(run)
    return runs


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    tmp = tmp_path_factory.mktemp("report")
    store, first = demo_store(tmp / "x.db")
    nightly = add_nightly_runs(store, [20.0, 20.1, 19.9, 20.05, 23.0, 23.0])
    store.close()
    folder = run_report(tmp / "x.db", "latest", out=tmp / "out")
    return tmp / "x.db", folder, [first, *nightly]


def test_report_writes_tables_plots_and_page(report) -> None:
    _, folder, _ = report
    assert (folder / "index.html").is_file()
    assert (folder / "tables" / "summary.tex").is_file()
    assert (folder / "tables" / "device_pi5.csv").is_file()
    for name in ALL_PLOTS:
        png = matplotlib.image.imread(folder / "plots" / f"{name}.png")
        # the double-column figure (7 in) at the page's resolution
        assert png.shape[1] == plots.DOUBLE.width_in * plots.SCREEN_DPI and png.shape[0] > 150
        assert png[..., :3].std() > 0.05  # something was drawn
    # PDFs (and their font subsetting, a fifth of a report's time) only for --style paper
    assert not list((folder / "plots").glob("*.pdf")) and not (folder / "paper").exists()


def test_default_folder_is_reports_run_id(report, tmp_path: Path, monkeypatch) -> None:
    db, _, runs = report
    monkeypatch.chdir(tmp_path)
    # The last nightly run has only pi5 and no failures: a quick report to build.
    folder = run_report(db.resolve(), runs[-1], runs_for_trends=1)
    assert folder == Path("reports") / runs[-1]
    assert (tmp_path / folder / "index.html").is_file()
    assert not (tmp_path / folder / "plots" / "trends.png").exists()  # one run: no trend


def test_trend_marks_exactly_the_night_that_regressed(report) -> None:
    db, _, runs = report
    with Store(db) as store:
        history = frame.results_frame(store, runs[1:])
        started = {r.run_id: r.started_at for r in store.runs()}
        history = history.assign(run_started_at=history["run_id"].map(started))
        verdicts = verdicts_over_runs(history, frame.SessionReader(store).medians)
    flagged = history[verdicts == SLOWER]
    assert list(flagged["run_id"]) == [runs[5]]  # after four nights of history
    assert list(flagged["model"]) == ["resnet_18&v2"]
    assert (verdicts[history["run_id"] == runs[1]] == "").all()  # first night: nothing to compare


def test_figures_with_nothing_to_show_are_not_drawn(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(store, run, "broken", status="failed")
    add_job(store, run, "latency_only", samples_ns=lognormal_ns(5, seed=1))
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    out = tmp_path / "plots"
    assert plots.accuracy_latency_figure(df, plots.SCREEN) is None  # no accuracy anywhere
    assert plots.speedup_figure(df, plots.SCREEN) is None  # no compressed variant
    assert plots.speedup_heatmap_figure(df, plots.SCREEN) is None
    history = df.assign(run_started_at="2026-11-28T00:00:00Z")
    assert plots.trends(history, out) == []
    only_failed = df[df["status"] == "failed"]
    assert plots.latency_distribution_figure(only_failed, plots.SCREEN,
                                             lambda j: np.array([])) is None
    assert not out.exists() or not any(out.iterdir())


def test_report_of_unknown_run_or_missing_database(report, tmp_path: Path) -> None:
    db, _, _ = report
    with pytest.raises(StoreError, match="no run 'zzz'"):
        run_report(db, "zzz", out=tmp_path / "r")
    with pytest.raises(StoreError, match="nothing.db"):
        run_report(tmp_path / "nothing.db")
    empty = tmp_path / "empty.db"
    Store(empty).close()
    with pytest.raises(StoreError, match="no runs yet"):
        run_report(empty)


def test_report_of_a_sparse_run(tmp_path: Path) -> None:
    """Rows as a failing agent leaves them: no stability, throttling, size or memory figures."""
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(
        store,
        run,
        "crashed",
        status="failed",
        stable=None,
        throttled=None,
        peak_rss_mb=None,
        size_bytes=None,
        error_message="agent killed by signal 9 (OOM?)",
    )
    add_job(store, run, "fine", samples_ns=lognormal_ns(3, seed=1), stable=None, throttled=None)
    store.close()
    folder = run_report(tmp_path / "x.db", run, out=tmp_path / "r")
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "agent killed by signal 9 (OOM?)" in page
    assert sorted(p.name for p in (folder / "plots").iterdir()) == [
        "latency_distributions.png",
        "memory.png",
        "model_size.png",
    ]


def test_plots_only_draw() -> None:
    # verdicts are the caller's (report/__init__.py, by compare's rule), never the plots' own
    assert loaded_after_import("harness.report.plots", ("harness.report.compare",)) == []


def test_a_bench_reports_trends_over_runs_of_its_own_suite_and_protocol(tmp_path: Path
                                                                          ) -> None:
    """Found: a report's trends took the last runs on its devices whatever their suite or
    protocol: a `--quick` run and a full one were drawn as one trend under a caption giving
    "2 sessions ... quick protocol" for both, and "changed in the last run" was judged across
    protocols. Only runs of the same suite (where the store names it) and the same protocol
    settings are the report's history; a run with none has no trend."""
    from harness.agent import protocol
    from harness.report import _history

    quick, full = dict(protocol.QUICK_SETTINGS), dict(protocol.DEFAULT_SETTINGS)
    store = Store(tmp_path / "x.db")
    runs = {}
    for name, suite, settings, median in (("quick1", "demo", quick, 10.0),
                                          ("full", "demo", full, 14.0),
                                          ("other_suite", "zoo", quick, 10.0),
                                          ("quick2", "demo", quick, 10.2),
                                          ("unrecorded", "demo", None, 10.1)):
        run = store.begin_run(f"edgebench bench --suite {suite}", suite, ["pi5"])
        with store.transaction() as conn:  # a minute apart, in this order
            conn.execute("UPDATE runs SET started_at = ? WHERE run_id = ?",
                         (f"2026-12-01T02:{len(runs):02d}:00Z", run))
        add_job(store, run, "net", samples_ns=sessions_ns(median, sessions=2, seed=len(runs)),
                settings=settings)
        store.finish_run(run)
        runs[name] = run
    everything = store.runs()

    def history_of(name: str, limit: int = 30) -> list[str]:
        current = frame.results_frame(store, [runs[name]])
        picked = _history(store, everything, runs[name], limit, current)
        return list(dict.fromkeys(picked.sort_values("run_started_at")["run_id"]))

    assert history_of("quick2") == [runs["quick1"], runs["quick2"]]
    assert history_of("quick2", limit=1) == [runs["quick2"]]
    assert history_of("full") == [runs["full"]]
    assert history_of("other_suite") == [runs["other_suite"]]
    # a store that does not say how a run was measured leaves it in
    assert history_of("unrecorded") == [runs[n] for n in ("quick1", "full", "quick2",
                                                           "unrecorded")]
    store.close()
    full_report = run_report(tmp_path / "x.db", runs["full"], out=tmp_path / "full")
    assert not (full_report / "plots" / "trends.png").exists()  # no run like it before
    quick_report = run_report(tmp_path / "x.db", runs["quick2"], out=tmp_path / "quick")
    assert (quick_report / "plots" / "trends.png").exists()


def test_a_runs_trend_shows_its_own_measurements_and_the_run_itself(tmp_path: Path) -> None:
    """Found: runs of `bench --model` name no suite, so every earlier run counted as comparable:
    the report of a run whose one (corrupt) model failed drew the trend of another model from
    other runs, titled "local: 0 of 1 changed speed in the last run", and the reported run was
    not on the axis. A report's trend holds only the measurements its run has (device, model,
    format, runtime, threads and batch), and the run itself is always its last run."""
    from harness.report import _history

    store = Store(tmp_path / "x.db")
    runs = {}
    for name, jobs in (("cnn1", [("digits_cnn", "ok", 1.0)]),
                       ("cnn2", [("digits_cnn", "ok", 1.02)]),
                       ("corrupt", [("corrupt", "failed", 0.0)]),
                       ("cnn_4_threads", [("digits_cnn@4", "ok", 0.6)]),
                       ("cnn3", [("digits_cnn", "ok", 0.99), ("new_net", "ok", 3.0)]),
                       ("cnn_failed", [("digits_cnn", "failed", 0.0)])):
        run = store.begin_run("edgebench bench --model m.onnx", None, ["local"])
        with store.transaction() as conn:  # a minute apart, in this order
            conn.execute("UPDATE runs SET started_at = ? WHERE run_id = ?",
                         (f"2026-12-01T02:{len(runs):02d}:00Z", run))
        for model, status, median in jobs:
            model, _, threads = model.partition("@")
            add_job(store, run, model, device="local", status=status,
                    threads=int(threads or 2),
                    samples_ns=sessions_ns(median, sessions=2, seed=len(runs))
                    if status == "ok" else None)
        store.finish_run(run)
        runs[name] = run
    everything = store.runs()

    def history_of(name: str) -> pd.DataFrame:
        return _history(store, everything, runs[name], 30,
                        frame.results_frame(store, [runs[name]]))

    assert set(history_of("corrupt")["run_id"]) == {runs["corrupt"]}
    assert set(history_of("cnn_4_threads")["run_id"]) == {runs["cnn_4_threads"]}
    history = history_of("cnn3")
    assert set(history["run_id"]) == {runs["cnn1"], runs["cnn2"], runs["cnn3"]}
    assert set(zip(history["model"], history["threads"], strict=True)) == {
        ("digits_cnn", 2), ("new_net", 2)}
    # the run's one measurement failed: it is the trend's last run, and the change it shows
    fig = plots.trends_figure(history_of("cnn_failed"))
    assert fig is not None
    ax = fig.axes[0]
    assert ax.get_xlim() == (-0.5, 3.5)  # cnn1, cnn2, cnn3 and this one
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "12-01 02:05"
    assert ax.get_title() == "local: 1 of 1 changed speed in the last run"
    store.close()
    report = run_report(tmp_path / "x.db", runs["corrupt"], out=tmp_path / "corrupt")
    assert not (report / "plots" / "trends.png").exists()
