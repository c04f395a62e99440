"""Trend figures across a rebuilt file: a model rebuilt under the same name (another sha256 than
at its previous run) is still the same series, but its line is broken there and the new file's
first point boxed, with a legend entry and a caption that say so; a step there is the file's,
not the board's. A store from before sha256s were recorded calls nothing rebuilt. Histories
come from a real store, as the nightly and the report read them."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from harness.report import compare, frame, nightly, plots, run_report
from harness.report.tables import latex_escape
from harness.store import Store
from tests.test_report_figures import farm_history
from tests.test_report_synthetic import add_job, sessions_ns

REBUILT = "file rebuilt (sha256 differs)"
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def nights(store: Store, shas: dict[str, list[str | None]], medians: dict[str, list[float]],
           top1: dict[str, list[float]] | None = None, device: str = "pi5") -> list[str]:
    """One run a night of each model on `device` with its sha256 (None: not recorded, as in a
    store from before it was), median latency and top-1 that night; the run ids."""
    runs = []
    for night in range(len(next(iter(shas.values())))):
        run = store.begin_run("edgebench nightly", "demo", [device])
        with store.transaction() as conn:
            conn.execute("UPDATE runs SET started_at = ? WHERE run_id = ?",
                         (f"2026-12-{night + 1:02d}T02:00:00Z", run))
        for k, model in enumerate(shas):
            add_job(store, run, model, device=device,
                    samples_ns=sessions_ns(medians[model][night], between_sd=0.01,
                                           seed=100 * k + night),
                    accuracy_top1=None if top1 is None else top1[model][night],
                    model_sha256=shas[model][night])
        store.finish_run(run)
        runs.append(run)
    return runs


def _history(store: Store, runs: list[str]) -> pd.DataFrame:
    return nightly.history(store, runs, ["pi5"])


def _series(ax: Axes) -> dict[str, list[list[float]]]:
    """Each legend label's drawn lines, as the x of their points: one list per Line2D."""
    out: dict[str, list[list[float]]] = {}
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            line = container.lines[0]
            assert line is not None
            out.setdefault(str(container.get_label()), []).append(list(line.get_xdata()))
    return out


def _boxes(ax: Axes) -> list[tuple[float, float]]:
    """Where the figure draws a hollow black mark: (x, y) of each."""
    found = []
    for c in ax.collections:
        if isinstance(c, PathCollection) and len(c.get_offsets()) and all(
                tuple(e) == to_rgba("black") for e in c.get_edgecolors()) \
                and not c.get_facecolors().any():
            found += [tuple(map(float, xy)) for xy in c.get_offsets()]
    return found


def _legend(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[str], pd.DataFrame]:
    """Five nights: `net` rebuilt on the third (another sha256, 20 ms -> 15 ms, top-1 70% ->
    72%); `old` recorded no sha256 on the first two nights, then one file throughout."""
    store = Store(tmp_path_factory.mktemp("rebuilt") / "x.db")
    runs = nights(store,
                  {"net": [SHA_A, SHA_A, SHA_B, SHA_B, SHA_B], "old": [None, None, SHA_C,
                                                                      SHA_C, SHA_C]},
                  {"net": [20.0, 20.0, 15.0, 15.0, 15.0], "old": [8.0] * 5},
                  {"net": [0.70, 0.70, 0.72, 0.72, 0.72], "old": [0.69] * 5})
    return store, runs, _history(store, runs)


def test_a_rebuilt_file_breaks_the_latency_trend_and_is_boxed(rebuilt) -> None:
    store, _, history = rebuilt
    verdicts = compare.verdicts_over_runs(history, frame.SessionReader(store).medians)
    for layout in (plots.SINGLE, plots.DOUBLE):
        fig = plots.trends_figure(history, layout, verdicts)
        assert fig is not None
        (ax,) = fig.axes
        # no line from the old file's last night to the new file's first
        assert _series(ax) == {"net": [[0, 1], [2, 3, 4]], "old": [[0, 1, 2, 3, 4]]}
        ((x, y),) = _boxes(ax)
        net = history[history["model"] == "net"]["latency_median_ms"]
        ratio = net.iloc[2] / net.iloc[2:].median()  # to the new file's median
        assert x == 2 and y == pytest.approx(ratio)
        assert _legend(fig).count(REBUILT) == 1


def test_a_rebuilt_file_breaks_the_accuracy_trend_and_is_boxed(rebuilt) -> None:
    _, _, history = rebuilt
    fig = plots.accuracy_trends_figure(history, plots.DOUBLE,
                                       compare.accuracy_over_runs(history))
    assert fig is not None
    (ax,) = fig.axes
    assert _series(ax) == {"net": [[0, 1], [2, 3, 4]], "old": [[0, 1, 2, 3, 4]]}
    assert _boxes(ax) == [(2.0, pytest.approx(72.0))]
    assert REBUILT in _legend(fig)


def test_one_file_throughout_draws_no_box_and_no_legend_entry(tmp_path: Path) -> None:
    """The legend keys only what is drawn; and a store without sha256s at all calls nothing
    rebuilt."""
    store = Store(tmp_path / "x.db")
    runs = nights(store, {"net": [SHA_A] * 3, "old": [None] * 3},
                  {"net": [20.0, 20.5, 26.0], "old": [8.0, 8.0, 8.0]},
                  {"net": [0.70, 0.70, 0.70], "old": [0.69, 0.68, 0.69]})
    history = _history(store, runs)
    for fig in (plots.trends_figure(history), plots.accuracy_trends_figure(history),
                plots.trends_figure(history.drop(columns="model_sha256"))):
        assert fig is not None
        assert REBUILT not in _legend(fig) and not _boxes(fig.axes[0])
        assert all(len(lines) == 1 for lines in _series(fig.axes[0]).values())
    assert plots.rebuilt_note(history) == ""


def test_at_farm_scale_a_grey_series_is_broken_and_boxed_too(tmp_path: Path) -> None:
    """An unchanged job drawn as a thin grey line is still another file after a rebuild: a
    mean step inside the grey bundle would read as noise of the board."""
    history, verdicts = farm_history(tmp_path / "farm.db")
    runs = list(frame.in_run_order(history)["run_id"].unique())
    rebuilt = (history["device"] == "board0") & (history["model"] == "m05") \
        & history["run_id"].isin(runs[2:])
    history.loc[rebuilt, "model_sha256"] = SHA_B
    for fig in (plots.trends_figure(history, plots.DOUBLE, verdicts),
                plots.accuracy_trends_figure(history, plots.DOUBLE,
                                             compare.accuracy_over_runs(history))):
        assert fig is not None
        board0, board1 = (ax for ax in fig.axes if ax.get_visible())
        greys = sorted(list(line.get_xdata()) for line in board0.lines
                       if line.get_color() == plots.TREND_GREY)
        # m05 as two lines, the other grey jobs one each
        assert greys.count([0, 1]) == 1 and greys.count([2, 3, 4]) == 1
        assert all(len(x) == 5 for x in greys if x not in ([0, 1], [2, 3, 4]))
        assert [x for x, _ in _boxes(board0)] == [2.0] and not _boxes(board1)
        assert REBUILT in _legend(fig)


def test_the_captions_name_the_rebuilt_measurement(rebuilt, tmp_path: Path) -> None:
    """The report's trend caption and the nightly page say where a rebuild is boxed, in the
    words of `edgebench compare`; a sha256 that appears where none was recorded is no rebuild."""
    store, runs, history = rebuilt
    note = plots.rebuilt_note(history)
    assert "1 measurement measured another file than in the run before under the same name " \
           "(rebuilt between the runs, sha256 differs)" in note
    assert "pi5: net (onnx, onnxruntime) at 12-03 02:00" in note
    assert "old" not in note
    nightly.write_trend(store, runs[-1], runs, ["pi5"], tmp_path / "nightly")
    page = (tmp_path / "nightly" / "index.html").read_text(encoding="utf-8")
    assert page.count("pi5: net (onnx, onnxruntime) at 12-03 02:00") == 1
    folder = run_report(store.path, runs[-1], out=tmp_path / "report")
    report = (folder / "index.html").read_text(encoding="utf-8")
    caption = report.split('<figure id="f-trends">', 1)[1].split("</figure>", 1)[0]
    assert "(rebuilt between the runs, sha256 differs)" in caption
    assert "pi5: net (onnx, onnxruntime) at 12-03 02:00" in caption
    others = [part for part in report.split("<figure")[1:]
              if not part.startswith(' id="f-trends"')]
    assert others and all("sha256 differs" not in part for part in others)


def _paper_captions(folder: Path) -> dict[str, str]:
    """Each figure's caption in `figures.tex` (the single-column one), by the figure's label."""
    tex = (folder / "paper" / "figures.tex").read_text(encoding="utf-8")
    return dict((label, caption) for caption, label in re.findall(
        r"^  \\caption\{(.*)\}\n  \\label\{fig:(.*)\}$", tex, flags=re.M))


def test_the_paper_caption_names_the_rebuilt_measurement(rebuilt, tmp_path: Path) -> None:
    """Found in review: the page's trend caption said where a rebuilt file was boxed, the
    LaTeX caption of `report --style paper` under the same figure did not. It says the same
    sentence, in that caption alone; with one file throughout it says nothing of it."""
    store, runs, history = rebuilt
    folder = run_report(store.path, runs[-1], out=tmp_path / "rebuilt", style="paper")
    captions = _paper_captions(folder)
    assert latex_escape(plots.rebuilt_note(history)) in captions["trends"]
    assert "pi5: net (onnx, onnxruntime) at 12-03 02:00" in captions["trends"]
    assert [n for n, caption in captions.items() if "sha256 differs" in caption] == ["trends"]
    same = Store(tmp_path / "same.db")
    runs = nights(same, {"net": [SHA_A] * 3}, {"net": [20.0, 20.5, 26.0]})
    folder = run_report(same.path, runs[-1], out=tmp_path / "same", style="paper")
    captions = _paper_captions(folder)
    assert "trends" in captions
    assert [n for n, caption in captions.items() if "sha256 differs" in caption] == []
