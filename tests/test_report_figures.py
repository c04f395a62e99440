"""Print-ready figures: each figure rendered from a stored run, at both column widths, and checked
for what a paper needs: labels that never overlap, text at 8-9 pt, the width of the column, log
axes where values span more than a decade, intervals on every point, embedded TrueType fonts
(`pdffonts`), and a `figures.tex` that compiles with captions written from the run."""

from __future__ import annotations

import io
import itertools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from harness.report import frame, paper, plots, run_report
from harness.report.labels import place_labels
from harness.store import Store
from tests.conftest import REPO
from tests.test_report_output import add_nightly_runs
from tests.test_report_synthetic import ISA, add_job, demo_store, sessions_ns

LAYOUTS = (plots.SINGLE, plots.DOUBLE)


def crowded_store(path: Path) -> tuple[Store, str]:
    """The demo's hard case: a dozen digits variants within a factor of two in latency and a
    point of accuracy, whose labels used to print over each other, beside a ResNet 100x
    slower and 1000x bigger."""
    store = Store(path)
    run = store.begin_run("edgebench bench --suite demo", "demo", ["local"])
    add_job(store, run, "digits", accuracy_top1=0.992, samples_ns=sessions_ns(0.07, seed=1),
            size_bytes=640_000, device="local")
    rng = np.random.default_rng(5)
    techniques = ["int8_static", "int8_dynamic", "fp16", "qat_int8", "prune50", "sparse70",
                  "svd_r16", "tucker_e90", "distill", "distill>prune30>qat_int8", "prune30",
                  "int4_weight"]
    for k, technique in enumerate(techniques):
        # a near-monotone trade-off: most of them on the Pareto front, all in one corner
        latency = 0.04 + 0.004 * k + float(rng.uniform(0, 0.002))
        add_job(store, run, f"digits-{technique}", baseline="digits", technique=technique,
                accuracy_top1=0.975 + 0.0015 * k, samples_ns=sessions_ns(latency, seed=10 + k),
                size_bytes=int(40_000 + 50_000 * k), device="local")
    add_job(store, run, "resnet18", accuracy_top1=0.70, samples_ns=sessions_ns(40.0, seed=3),
            size_bytes=46_800_000, device="local", dataset="imagenet")
    add_job(store, run, "resnet18-int8", baseline="resnet18", technique="int8_static",
            accuracy_top1=0.69, samples_ns=sessions_ns(6.0, seed=4), size_bytes=11_800_000,
            device="local", dataset="imagenet")
    store.finish_run(run)
    return store, run


def _builders(store: Store, run: str, history_runs: list[str] | None = None
              ) -> dict[str, plots.FigureBuilder]:
    reader = frame.SessionReader(store)
    df = frame.with_memory_ranges(
        frame.with_baselines(frame.results_frame(store, [run]), sessions=reader), reader)
    history = _history(store, history_runs) if history_runs else None
    return plots.report_figures(df, history, samples=reader.samples_ms, medians=reader.medians)


def _history(store: Store, runs: list[str]) -> pd.DataFrame:
    """The rows of `runs` with each run's start time, as the nightly reads them."""
    started = {r.run_id: r.started_at for r in store.runs()}
    history = frame.results_frame(store, runs)
    return history.assign(run_started_at=history["run_id"].map(started))


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], Figure]:
    """Every figure of two stored runs (the two-device demo with nightly history, and the
    crowded one) at both widths, keyed by (run, figure, layout)."""
    tmp = tmp_path_factory.mktemp("figures")
    out: dict[tuple[str, str, str], Figure] = {}
    store, first = demo_store(tmp / "demo.db")
    nightly = add_nightly_runs(store, [20.0, 21.0, 20.5])
    for name, build in _builders(store, first, [first, *nightly]).items():
        for layout in LAYOUTS:
            fig = build(layout)
            if fig is not None:
                out[("demo", name, layout.name)] = fig
    crowded, run = crowded_store(tmp / "crowded.db")
    for name, build in _builders(crowded, run).items():
        for layout in LAYOUTS:
            fig = build(layout)
            if fig is not None:
                out[("crowded", name, layout.name)] = fig
    return out


def test_every_figure_is_drawn_at_both_widths(figures) -> None:
    for run, names in (("demo", plots.FIGURE_NAMES),
                       ("crowded", [n for n in plots.FIGURE_NAMES if n != "trends"])):
        for name, layout in itertools.product(names, LAYOUTS):
            assert (run, name, layout.name) in figures, (run, name, layout.name)


def _texts(fig: Figure) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def test_no_two_labels_overlap(figures) -> None:
    for key, fig in figures.items():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_visible()]
            for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
                assert not a.overlaps(b), (key, ax.texts[i].get_text(), ax.texts[j].get_text())


def _tick_overlaps(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of tick labels of one axis whose boxes overlap, among the ticks in view."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            shown = [(tick.label1.get_text(), tick.label1.get_window_extent(renderer))
                     for tick in (*axis.get_major_ticks(), *axis.get_minor_ticks())
                     if tick.label1.get_visible() and tick.label1.get_text()
                     and low <= tick.get_loc() <= high]
            if axis is ax.yaxis:  # the rows' family names, in bold on rows of their own
                shown += [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts
                          if t.get_visible() and t.get_fontweight() == "bold"]
            found += [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(shown, 2)
                      if box_a.overlaps(box_b)]
    return found


def test_no_two_tick_labels_run_into_each_other(figures, tmp_path: Path) -> None:
    """Found on a real demo run: a log latency axis spanning a decade and a bit (digits
    variants from 0.03 to 0.7 ms) got matplotlib's minor labels, 3x10^-2, 4x10^-2, 6x10^-2,
    printed into each other in a single column."""
    store = Store(tmp_path / "decade.db")
    run = store.begin_run("edgebench bench --suite demo", "demo", ["local"])
    add_job(store, run, "digits", accuracy_top1=0.992, samples_ns=sessions_ns(0.07, seed=1),
            device="local")
    for k, (technique, ms) in enumerate((("distill", 0.032), ("prune50", 0.034),
                                         ("int8_static", 0.09), ("tucker_e90", 0.14),
                                         ("int8_dynamic", 0.58))):
        add_job(store, run, f"digits-{technique}", baseline="digits", technique=technique,
                accuracy_top1=0.986 + 0.001 * k, samples_ns=sessions_ns(ms, seed=20 + k),
                device="local")
    store.finish_run(run)
    decade = {(name, layout.name): build(layout)
              for name, build in _builders(store, run).items() for layout in LAYOUTS}
    assert decade[("accuracy_latency", "single")].axes[0].get_xscale() == "log"
    for key, fig in [*figures.items(), *decade.items()]:
        if fig is not None:
            assert not _tick_overlaps(fig), (key, _tick_overlaps(fig))


def zoo_store(path: Path, models: int = 20) -> tuple[Store, str]:
    """A zoo: `models` fp32 models with an int8 variant each, 60 label rows in one panel."""
    store = Store(path)
    run = store.begin_run("edgebench bench --suite zoo", "zoo", ["pi5"])
    for k in range(models):
        add_job(store, run, f"model{k:02d}", samples_ns=sessions_ns(5.0 + k, seed=k))
        add_job(store, run, f"model{k:02d}-int8", baseline=f"model{k:02d}",
                samples_ns=sessions_ns(2.0 + k / 2, seed=100 + k))
    store.finish_run(run)
    return store, run


def test_a_zoo_is_as_tall_as_it_needs_on_the_page_and_compacted_legibly_in_print(
        tmp_path: Path) -> None:
    # Found: 40 measurements drawn at most a paper page tall, on the HTML page too, with the
    # family names, the row labels and the figures beside the bars printed into each other.
    store, run = zoo_store(tmp_path / "zoo.db")
    builders = _builders(store, run)
    rows = ("latency_distributions", "memory", "model_size", "speedup_by_technique")
    for name in rows:
        page = builders[name](plots.SCREEN)
        assert page is not None and page.get_figheight() > plots.MAX_HEIGHT_IN, name
        assert not _tick_overlaps(page), (name, _tick_overlaps(page))
        assert {t.get_fontsize() for t in _texts(page)} <= {8, 9}, name  # not compacted
        for layout in LAYOUTS:
            fig = builders[name](layout)
            assert fig is not None and fig.get_figheight() <= plots.MAX_HEIGHT_IN + 1e-6
            assert not _tick_overlaps(fig), (name, layout.name, _tick_overlaps(fig))
            sizes = [t.get_fontsize() for t in _texts(fig)]
            assert min(sizes) >= plots.MIN_ROW_PT and max(sizes) <= 9, (name, layout.name)
            fig.canvas.draw()
            for ax in fig.axes:  # the figures beside the bars
                boxes = [t.get_window_extent() for t in ax.texts if t.get_fontweight() != "bold"]
                assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    folder = run_report(tmp_path / "zoo.db", run, out=tmp_path / "report", style="paper")
    from PIL import Image

    with Image.open(folder / "plots" / "latency_distributions.png") as png:
        assert png.height > plots.MAX_HEIGHT_IN * plots.SCREEN_DPI  # the page's, full height
    pdf = subprocess.run(["pdfinfo", str(folder / "paper" / "latency_distributions-double.pdf")],
                         capture_output=True, text=True) if shutil.which("pdfinfo") else None
    if pdf is not None:
        height_pt = float(re.search(r"Page size:\s+[\d.]+ x ([\d.]+) pts", pdf.stdout)[1])
        assert height_pt <= plots.MAX_HEIGHT_IN * 72 + 0.5  # the paper's, a page at most


def test_the_crowded_front_is_labelled_inside_the_axes(figures) -> None:
    for layout in LAYOUTS:
        fig = figures[("crowded", "accuracy_latency", layout.name)]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]  # the digits panel; ResNet's ImageNet accuracy has its own
        labels = [t.get_text() for t in ax.texts]
        # most of the dozen variants are on the front: the placer must fit several of them
        assert len(labels) >= 5, labels
        assert "int8_static" in labels  # the fastest, labelled first
        frame_box = ax.get_window_extent(renderer)
        for t in ax.texts:
            box = t.get_window_extent(renderer)
            assert frame_box.x0 <= box.x0 and box.x1 <= frame_box.x1, t.get_text()
            assert frame_box.y0 <= box.y0 and box.y1 <= frame_box.y1, t.get_text()


def test_placer_leaves_out_what_cannot_fit() -> None:
    fig = Figure(figsize=(2, 2))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    xs = [0.5] * 40
    left_out = place_labels(ax, xs, xs, [f"a long label {i}" for i in range(40)])
    assert 0 < len(left_out) < 40
    assert len(ax.texts) == 40 - len(left_out)


def _axes_1x1(size: float = 2.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return ax


def _crosses(ax: Any, text: Any, line: tuple[float, float, float, float]) -> bool:
    box = text.get_window_extent(ax.get_figure().canvas.get_renderer())
    (x0, y0), (x1, y1) = ax.transData.transform([line[:2], line[2:]])
    xs, ys = np.linspace(x0, x1, 200), np.linspace(y0, y1, 200)
    return bool(((xs > box.x0) & (xs < box.x1) & (ys > box.y0) & (ys < box.y1)).any())


def test_placer_keeps_labels_off_error_bars_where_it_can() -> None:
    """Found in an audit: labels of the accuracy figure were written across other points'
    error bars, which then read as struck through. A whisker just right of the point, where a
    label goes first, is kept clear of; where every position crosses one, the label is still
    drawn (crossing), never left out for it."""
    whisker = (0.56, 0.2, 0.56, 0.8)
    ax = _axes_1x1()
    assert place_labels(ax, [0.5], [0.5], ["int8_static"]) == []
    assert _crosses(ax, ax.texts[0], whisker)  # where it goes without being told
    ax = _axes_1x1()
    assert place_labels(ax, [0.5], [0.5], ["int8_static"], avoid_lines=[whisker]) == []
    assert not _crosses(ax, ax.texts[0], whisker)
    # error bars everywhere: crossed rather than left out
    grid = [(0.0, y, 1.0, y) for y in np.linspace(0, 1, 41)] + [
        (x, 0.0, x, 1.0) for x in np.linspace(0, 1, 41)]
    ax = _axes_1x1()
    assert place_labels(ax, [0.5], [0.5], ["int8_static"], avoid_lines=grid) == []
    assert len(ax.texts) == 1
    # an interval reaching a million times past the axes: kept clear of, at no cost
    ax = _axes_1x1()
    assert place_labels(ax, [0.5], [0.5], ["int8_static"],
                        avoid_lines=[(0.56, -1e9, 0.56, 1e9)]) == []
    assert not _crosses(ax, ax.texts[0], whisker)


def whiskered_store(path: Path) -> tuple[Store, str]:
    """A crowd in one corner with long error bars both ways: fifteen digits variants within
    0.02 ms and 3 points of accuracy, each timed in five sessions that differ by 5% and scored
    on 2,000 images, eight of them on the Pareto front."""
    store = Store(path)
    run = store.begin_run("edgebench bench --suite demo", "demo", ["local"])
    add_job(store, run, "digits", accuracy_top1=0.975, accuracy_n=2000, device="local",
            samples_ns=sessions_ns(0.06, seed=1, between_sd=0.05))
    rng = np.random.default_rng(7)
    for k, technique in enumerate(["int8_static", "int8_dynamic", "fp16", "qat_int8", "prune50",
                                   "sparse70", "svd_r16", "tucker_e90", "distill",
                                   "distill>prune30", "prune30", "int4_weight", "lowrank_r8"]):
        latency = 0.04 + 0.0015 * k + float(rng.uniform(0, 0.003))
        add_job(store, run, f"digits-{technique}", baseline="digits", technique=technique,
                accuracy_top1=0.955 + 0.0015 * k + float(rng.uniform(0, 0.004)),
                accuracy_n=2000, device="local",
                samples_ns=sessions_ns(latency, seed=10 + k, between_sd=0.05))
    store.finish_run(run)
    return store, run


def _label_whisker_crossings(fig: Figure) -> list[str]:
    """The labels written across an error bar (its drawn segment through the label's text box
    as drawn), once per bar crossed."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    out = []
    for ax in fig.axes:
        bars = [ax.transData.transform(segment) for container in ax.containers
                if isinstance(container, ErrorbarContainer) for lines in container.lines[2]
                for segment in lines.get_segments()]
        for text in ax.texts:
            box = text.get_window_extent(renderer)
            for (x0, y0), (x1, y1) in bars:
                t = np.linspace(0, 1, 400)
                xs, ys = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                if ((xs > box.x0) & (xs < box.x1) & (ys > box.y0) & (ys < box.y1)).any():
                    out.append(text.get_text())
    return out


def test_crowded_front_labels_keep_off_every_error_bar(tmp_path: Path) -> None:
    """Found by a paper's reader: in a crowded accuracy panel labels were still written across
    error bars (22 crossings in a single column here), since a label took a place across a
    whisker before one a ring further out that was clear. Where a clear place exists, however
    far out, a label takes it; every front point is still labelled."""
    store, run = whiskered_store(tmp_path / "w.db")
    df = _builders(store, run)
    for layout in LAYOUTS:
        fig = df["accuracy_latency"](layout)
        assert fig is not None
        (ax,) = fig.axes
        front = int(frame.pareto_front(frame.results_frame(store, [run]), "latency_median_ms",
                                       "accuracy_top1").sum())
        assert len(ax.texts) == front == 8
        assert _label_whisker_crossings(fig) == []


def stepped_store(path: Path) -> tuple[Store, str]:
    """A staircase front: seven digits variants each 2 us slower and 0.8 points more accurate
    than the last, scored on 20,000 images, so that the front's risers stand well clear of the
    error bars, right of each point where a label goes first; the fp32 parent far right."""
    store = Store(path)
    run = store.begin_run("edgebench bench --suite demo", "demo", ["local"])
    add_job(store, run, "digits", accuracy_top1=0.99, accuracy_n=20_000, device="local",
            samples_ns=sessions_ns(0.08, seed=1, between_sd=0.005))
    for k, technique in enumerate(["int8_static", "int8_dynamic", "fp16", "qat_int8",
                                   "prune50", "sparse70", "svd_r16"]):
        add_job(store, run, f"digits-{technique}", baseline="digits", technique=technique,
                accuracy_top1=0.93 + 0.008 * k, accuracy_n=20_000, device="local",
                samples_ns=sessions_ns(0.04 + 0.002 * k, seed=10 + k, between_sd=0.005))
    store.finish_run(run)
    return store, run


def _label_front_crossings(fig: Figure) -> list[str]:
    """The labels written across the dashed Pareto front (a segment of it as drawn through the
    label's text box as drawn), once per segment crossed."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    out = []
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_linestyle() != "--":
                continue
            corners = np.column_stack(
                cbook.STEP_LOOKUP_MAP[line.get_drawstyle()](*line.get_xydata().T))
            drawn = ax.transData.transform(corners)
            for text in ax.texts:
                box = text.get_window_extent(renderer)
                for start, end in itertools.pairwise(drawn):
                    dots = start + np.linspace(0, 1, 400)[:, None] * (end - start)
                    if ((dots[:, 0] > box.x0) & (dots[:, 0] < box.x1) & (dots[:, 1] > box.y0)
                            & (dots[:, 1] < box.y1)).any():
                        out.append(text.get_text())
    return out


def test_front_labels_keep_off_the_pareto_front(tmp_path: Path) -> None:
    """Found in review: labels kept off the error bars but not off the dashed front, so on a
    staircase each label, right of its point, was written across the next riser. Where a clear
    place exists a label takes it; every front point is still labelled."""
    store, run = stepped_store(tmp_path / "s.db")
    for layout in LAYOUTS:
        fig = _builders(store, run)["accuracy_latency"](layout)
        assert fig is not None
        (ax,) = fig.axes
        assert len(ax.texts) == 8
        assert _label_front_crossings(fig) == []
        assert _label_whisker_crossings(fig) == []


def test_placer_crosses_fewest_error_bars_where_none_is_clear() -> None:
    """Where every free position crosses an error bar the label is still drawn, across as few
    as can be: here bars run across the whole panel closer than a line of text, so every
    place crosses one or two, and right of the point, where a label goes first, dense ones
    run up and down as well. The label goes left, not across those."""
    across = [(0.0, y, 1.0, y) for y in np.linspace(0, 1, 13)]
    up = [(x, 0.0, x, 1.0) for x in np.linspace(0.52, 1, 25)]
    ax = _axes_1x1()
    assert place_labels(ax, [0.5], [0.5], ["int8_static"], avoid_lines=across + up) == []
    (label,) = ax.texts
    assert 1 <= sum(_crosses(ax, label, line) for line in across) <= 2
    assert not any(_crosses(ax, label, line) for line in up)


def test_the_model_size_legend_keys_only_what_is_drawn(quick) -> None:
    """Found in an audit: a run of fp32 models alone had "compressed variant" in its legend,
    naming a bar that was not there."""
    df, _, _ = quick
    for rows, keys in ((df[df["is_baseline"]], ["fp32 baseline"]),
                       (df, ["fp32 baseline", "compressed variant"])):
        fig = plots.model_size_figure(rows, plots.SINGLE)
        assert fig is not None
        assert [t.get_text() for t in fig.legends[0].get_texts()] == keys


def test_text_is_8_to_9_pt_and_width_is_the_column(figures) -> None:
    for (run, name, layout), fig in figures.items():
        assert fig.get_figwidth() == pytest.approx(plots.LAYOUTS[layout].width_in), (name, layout)
        for text in _texts(fig):
            assert 8 <= text.get_fontsize() <= 9, (run, name, layout, text.get_text())


def test_log_axis_exactly_when_values_span_more_than_a_decade(figures) -> None:
    assert plots.wide(np.array([1.0, 10.0])) is False
    assert plots.wide(np.array([1.0, 10.5])) is True
    # crowded: sizes 0.04 to 46.8 MB, latencies 0.04 to 40 ms; speedups within 10x
    for layout in LAYOUTS:
        size = figures[("crowded", "model_size", layout.name)].axes[0]
        assert size.get_xscale() == "log"
        digits, resnet = figures[("crowded", "accuracy_latency", layout.name)].axes[:2]
        assert digits.get_xscale() == "linear" and resnet.get_xscale() == "linear"
        dist = figures[("crowded", "latency_distributions", layout.name)].axes[0]
        assert dist.get_xscale() == "log"
        # said in words, as the model-size axis says it (found in an audit: it was not)
        assert dist.get_xlabel() == "Latency [ms] (log scale)"
        assert size.get_xlabel() == "Model file size [MB] (log scale)"
        # demo: speedups 1.3x to 2.5x, memory 80 to 130 MiB
        speedup = figures[("demo", "speedup_by_technique", layout.name)].axes[0]
        assert speedup.get_xscale() == "linear"
        memory = figures[("demo", "memory", layout.name)].axes[0]
        assert memory.get_xscale() == "linear"


def test_accuracy_plot_shows_both_intervals_on_every_point(figures, tmp_path: Path) -> None:
    store, run = crowded_store(tmp_path / "c.db")
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    fig = figures[("crowded", "accuracy_latency", "single")]
    total = 0
    for ax, lowest in zip(fig.axes[:2], (95, 60), strict=True):
        containers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert containers and all(c.has_xerr and c.has_yerr for c in containers)
        points = np.vstack([c.lines[0].get_xydata() for c in containers])
        total += len(points)
        # the axes show the data: every point inside, not squeezed against a zero
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        assert x0 > 0 and y0 > lowest
        assert ((points[:, 0] > x0) & (points[:, 0] < x1)).all()
        assert ((points[:, 1] > y0) & (points[:, 1] < y1)).all()
    assert total == df["accuracy_top1"].notna().sum() == 15


def test_memory_is_split_into_runtime_and_model(figures, tmp_path: Path) -> None:
    store, run = crowded_store(tmp_path / "c.db")
    df = frame.results_frame(store, [run])
    fig = figures[("crowded", "memory", "double")]
    ax = fig.axes[0]
    runtime, model = ax.containers[0], ax.containers[1]
    widths_runtime = sorted(round(p.get_width(), 6) for p in runtime)
    total = sorted(round(a.get_width() + b.get_width(), 6) for a, b in zip(runtime, model,
                                                                       strict=True))
    assert widths_runtime == sorted(round(v, 6) for v in df["rss_runtime_mb"])
    assert total == sorted(round(v, 6) for v in df["timed_peak_rss_mb"])
    assert all(p.get_hatch() for p in model)  # the model's share reads without colour


def test_every_figure_names_the_cpu_isa(figures) -> None:
    for (run, name, _), fig in figures.items():
        if name == "model_size":  # a file's size does not depend on the CPU
            continue
        title = " ".join(fig.get_suptitle().split())
        assert title.startswith("CPU ISA"), (run, name)
        assert ISA in title, (run, name, title)


def _pdffonts(path: Path) -> list[list[str]]:
    out = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True)
    return [line.split() for line in out.stdout.splitlines()[2:] if line.strip()]


@pytest.fixture(scope="module")
def paper_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("paper")
    store, _ = demo_store(tmp / "x.db")
    last = add_nightly_runs(store, [20.0, 20.5])[-1]
    # a chain of techniques, named as the suite names it, and a run of many models: the
    # summary table is at its widest and the row charts at their tallest
    add_job(store, last, "resnet_18&v2-chain", baseline="resnet_18&v2", accuracy_top1=0.65,
            technique="distill>prune30>qat_int8", samples_ns=sessions_ns(9.0, seed=40))
    for k in range(24):
        add_job(store, last, f"resnet_18&v2-variant{k:02d}", baseline="resnet_18&v2",
                accuracy_top1=0.6 + 0.002 * k, technique=f"prune{k:02d}",
                samples_ns=sessions_ns(10.0 + k / 4, seed=50 + k))
    store.close()
    return run_report(tmp / "x.db", "latest", out=tmp / "out", style="paper")


def test_paper_style_writes_both_widths(paper_report: Path) -> None:
    paper = paper_report / "paper"
    names = sorted(p.stem.rsplit("-", 1)[0] for p in paper.glob("*-single.pdf"))
    assert names == sorted(plots.FIGURE_NAMES)
    for name in names:
        for layout in LAYOUTS:
            pdf = (paper / f"{name}-{layout.name}.pdf").read_bytes()
            box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)
            assert box is not None
            assert float(box.group(1)) == pytest.approx(layout.width_in * 72, abs=0.5)
    page = (paper_report / "index.html").read_text(encoding="utf-8")
    assert 'href="paper/figures.tex"' in page and "paper/memory-single.pdf" in page


@pytest.mark.skipif(shutil.which("pdffonts") is None,
                    reason="pdffonts not installed (apt-get install poppler-utils, "
                    "scripts/install-system-deps.sh)")
def test_paper_pdfs_embed_truetype_fonts(paper_report: Path) -> None:
    pdfs = sorted((paper_report / "paper").glob("*.pdf"))
    assert pdfs
    for pdf in pdfs:
        fonts = _pdffonts(pdf)
        assert fonts, pdf
        for row in fonts:
            line = " ".join(row)
            assert "Type 3" not in line, (pdf.name, line)
            assert "TrueType" in line, (pdf.name, line)
            emb, sub = row[-5], row[-4]  # name type [encoding] emb sub uni object ID
            assert emb == "yes" and sub == "yes", (pdf.name, line)


def test_figures_tex_captions_come_from_the_run(paper_report: Path) -> None:
    tex = (paper_report / "paper" / "figures.tex").read_text(encoding="utf-8")
    figures = re.findall(r"^\\includegraphics\[width=\\columnwidth,[^]]*\]\{([^}]+)\}", tex.replace(
        "  \\includegraphics", "\\includegraphics"), re.MULTILINE)
    assert sorted(figures) == sorted(p.stem for p in (paper_report / "paper").glob("*-single.pdf"))
    captions = re.findall(r"^  \\caption\{(.*)\}$", tex, re.MULTILINE)
    assert len(captions) == len(figures)
    for figure, caption in zip(figures, captions, strict=True):
        if figure.removesuffix("-single") in plots.FILE_FIGURES:  # of no device or session
            assert "pi5" not in caption and "sessions" not in caption
            continue
        # the demo's nightly runs: device pi5, onnxruntime 1.32.0, 4 threads, 5 sessions
        assert "pi5" in caption and "arm neon asimd asimddp" in caption
        assert "onnxruntime 1.32.0" in caption and "4 threads" in caption
        assert "5 sessions" in caption


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex not installed (apt-get install texlive-latex-recommended)")
def test_figures_tex_compiles_with_the_tables(paper_report: Path, tmp_path: Path) -> None:
    """In a plain two-column article with LaTeX's default font encoding (OT1) and only the
    packages figures.tex names: every table fits its width, every figure its page, and a
    technique chain `a>b>c` prints as written (OT1 once set `>` as an inverted question mark).
    Found: the summary 319 pt too wide, figures 52-164 pt too tall for the page."""
    shutil.copytree(paper_report / "paper", tmp_path / "paper")
    tables = sorted(p.stem for p in (tmp_path / "paper").glob("*.tex") if p.stem != "figures")
    inputs = "\n".join(f"\\input{{paper/{t}}}" for t in tables)
    (tmp_path / "main.tex").write_text(
        "\\documentclass[twocolumn]{article}\n"
        "\\usepackage{booktabs}\n\\usepackage{graphicx}\n\\graphicspath{{paper/}}\n"
        f"\\begin{{document}}\n\\input{{paper/figures}}\n{inputs}\n\\end{{document}}\n"
    )
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "main.pdf").stat().st_size > 10_000
    log = (tmp_path / "main.log").read_text(encoding="latin-1")
    assert "Float too large" not in log, re.findall(r".*Float too large.*", log)
    overfull = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]
    assert all(w <= 2.0 for w in overfull), overfull
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "main.pdf", "-"], cwd=tmp_path, capture_output=True,
                              text=True, check=True).stdout
        assert "distill>prune30>qat_int8" in "".join(text.split()), text[:2000]
        assert "¿" not in text and "¡" not in text


def test_report_figures_handle_an_empty_history() -> None:
    empty = pd.DataFrame()
    assert plots.report_figures(empty)["trends"](plots.SINGLE) is None


def test_a_single_point_shows_its_whole_interval(tmp_path: Path) -> None:
    """One measurement (one `bench --model`) has no range of data to squeeze: its latency and
    accuracy intervals are drawn whole instead of running off both edges like a line."""
    store = Store(tmp_path / "one.db")
    run = store.begin_run("edgebench bench --model digits.onnx", None, ["local"])
    spread = [np.full(200, v * 1e6) for v in (0.05, 0.09, 0.14)]  # sessions far apart
    add_job(store, run, "digits", accuracy_top1=0.99, samples_ns=spread, device="local")
    store.finish_run(run)
    fig = _builders(store, run)["accuracy_latency"](plots.SINGLE)
    assert fig is not None
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    for segments in bars.lines[2]:
        for (xa, ya), (xb, yb) in segments.get_segments():
            assert x0 <= min(xa, xb) and max(xa, xb) <= x1
            assert y0 <= min(ya, yb) and max(ya, yb) <= y1


def test_devices_of_one_instruction_set_share_one_isa_line() -> None:
    """A farm of three boards of one kind names the ISA once for them, not three times."""
    df = pd.DataFrame({"device": ["pi-a", "pi-b", "jetson"],
                       "isa": ["arm asimd dotprod", "arm asimd dotprod", "arm asimd sve"]})
    fig, _ = plots._figure(plots.DOUBLE, 1, 1.0)
    plots._isa_title(fig, df, plots.DOUBLE)
    title = " ".join(fig.get_suptitle().split())
    assert title == "CPU ISA jetson: arm asimd sve; pi-a, pi-b: arm asimd dotprod"


def test_a_model_run_on_a_gpu_names_the_gpu_beside_the_isa() -> None:
    """Figures of a CUDA box say which GPU produced them, as they say which ISA did; a CPU-only
    device of the same ISA keeps its own line."""
    gpu = "NVIDIA H200 (sm 9.0, 132 SMs)"
    df = pd.DataFrame({"device": ["cuda", "cuda", "host"], "isa": [ISA, ISA, ISA],
                       "accelerator": [gpu, None, None]})
    fig, _ = plots._figure(plots.DOUBLE, 1, 1.0)
    plots._isa_title(fig, df, plots.DOUBLE)
    title = " ".join(fig.get_suptitle().split())
    assert title == f"CPU ISA cuda: {ISA}, accelerator {gpu}; host: {ISA}"
    # a name is text, not TeX: a '$' pair in it used to stop the figure from being drawn
    df.loc[0, "accelerator"] = r"GPU $\frac$"
    fig, _ = plots._figure(plots.DOUBLE, 1, 1.0)
    plots._isa_title(fig, df, plots.DOUBLE)
    fig.savefig(io.BytesIO(), format="png")


def _in_fresh_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter, as `edgebench report` runs: this test process may have
    loaded JAX (the TFLite builds), with which figures are drawn in one process only."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_figures_drawn_in_two_processes_are_the_same_files(tmp_path: Path) -> None:
    """The report draws every other figure in a forked process: same files, same order, same
    bytes as drawing them all in one."""
    code = (
        "import sys\nfrom pathlib import Path\nfrom harness.report import plots\n"
        "from tests.test_report_figures import _builders, crowded_store\n"
        "tmp = Path(sys.argv[1])\nstore, run = crowded_store(tmp / 'c.db')\n"
        "builders = _builders(store, run)\n"
        "assert not any(m in sys.modules for m in plots.FORK_HOSTILE)\n"
        "for jobs in (1, 2):\n"
        "    written = plots.write_figures(builders, tmp / str(jobs), jobs=jobs)\n"
        "    print(' '.join(p.name for p in written))\n")
    proc = _in_fresh_python(code, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    one, two = proc.stdout.split("\n")[:2]
    assert one == two and len(one.split()) >= 5
    for name in one.split():
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name


def test_a_figure_that_fails_in_the_other_process_is_named(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\nfrom harness.report import plots\n"
        "def broken(layout):\n    raise ValueError('no such column: latency_median_ms')\n"
        "builders = {'fine': lambda layout: None, 'broken': broken}\n"  # 'broken': the child's
        "plots.write_figures(builders, Path(sys.argv[1]), jobs=2)\n")
    proc = _in_fresh_python(code, str(tmp_path))
    assert proc.returncode != 0
    assert "RuntimeError: drawing broken: ValueError: no such column" in proc.stderr


def test_a_disk_error_in_the_other_process_is_the_same_error_here(tmp_path: Path) -> None:
    """A full disk while the second process saves its figures is an OSError in the report
    too, which `report` says in one line, not a RuntimeError (a bug, with a traceback); a bug
    there shows where it was raised there."""
    code = (
        "import errno, sys\nfrom pathlib import Path\nfrom harness.report import plots\n"
        "def full(layout):\n    raise OSError(errno.ENOSPC, 'No space left on device', 'x.png')\n"
        "def bug(layout):\n    return {}['latency']\n"
        "which = full if sys.argv[2] == 'full' else bug\n"
        "try:\n    plots.write_figures({'fine': lambda layout: None, 'second': which},\n"
        "                        Path(sys.argv[1]), jobs=2)\n"
        "except OSError as err:\n    print(err.errno == errno.ENOSPC, err.filename)\n")
    proc = _in_fresh_python(code, str(tmp_path), "full")
    assert proc.returncode == 0 and proc.stdout.split() == ["True", "x.png"], proc.stderr
    proc = _in_fresh_python(code, str(tmp_path), "bug")
    assert "RuntimeError: drawing second: KeyError: 'latency'" in proc.stderr
    assert "in bug" in proc.stderr  # the child's frame


def test_with_jax_loaded_figures_are_drawn_in_this_process(tmp_path: Path) -> None:
    code = (
        "import sys, os\nfrom pathlib import Path\nimport jax\nfrom harness.report import plots\n"
        "pid = os.getpid()\n"
        "def build(layout):\n    assert os.getpid() == pid, 'forked'\n    return None\n"
        "plots.write_figures({'a': build, 'b': build}, Path(sys.argv[1]), jobs=2)\n")
    proc = _in_fresh_python(code, str(tmp_path))
    assert proc.returncode == 0, proc.stderr


def test_accuracy_trend_has_a_wilson_interval_on_every_night(tmp_path: Path) -> None:
    """The nightly's accuracy trend: one point per night and job, each with its interval."""
    store, first = demo_store(tmp_path / "x.db")
    nightly = add_nightly_runs(store, [20.0, 21.0, 20.5])
    history = _history(store, nightly)
    for layout in LAYOUTS:
        fig = plots.accuracy_trends_figure(history, layout)
        assert fig is not None and fig.get_figwidth() == pytest.approx(layout.width_in)
        assert ISA in " ".join(fig.get_suptitle().split())
        (ax,) = fig.axes
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        points = np.vstack([c.lines[0].get_xydata() for c in bars])
        with_accuracy = history["accuracy_top1"].notna().sum()
        assert len(points) == with_accuracy and all(c.has_yerr for c in bars)
        assert sorted(set(points[:, 0])) == [0, 1, 2]  # the nights, in start order
    assert plots.accuracy_trends_figure(history[history["run_id"] == nightly[0]]) is None


def farm_history(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Five nights of 12 models on two boards, latencies from 0.1 to 50 ms and top-1 from 60% to
    93% on 1000 images; in the last night m03 is 1.5x slower on board0, m05 gets 4 images fewer
    right on board1 and m07 fails there. The history and its verdicts, as the nightly computes
    them."""
    from harness.report import compare

    store = Store(path)
    latencies = np.geomspace(0.1, 50, 12)
    for night in range(5):
        run = store.begin_run("edgebench nightly", "farm", ["board0", "board1"])
        with store.transaction() as conn:
            conn.execute("UPDATE runs SET started_at = ? WHERE run_id = ?",
                         (f"2026-12-{night + 1:02d}T01:30:00Z", run))
        for device in ("board0", "board1"):
            for k, latency in enumerate(latencies):
                model, last = f"m{k:02d}", night == 4
                if last and (device, model) == ("board1", "m07"):
                    add_job(store, run, model, device=device, status="failed")
                    continue
                slower = 1.5 if last and (device, model) == ("board0", "m03") else 1.0
                worse = 0.004 if last and (device, model) == ("board1", "m05") else 0.0
                add_job(store, run, model, device=device, samples_ns=sessions_ns(
                    latency * slower, sessions=3, n=60, between_sd=0.01, seed=night * 100 + k),
                    accuracy_top1=0.60 + 0.03 * k - worse)
        store.finish_run(run)
    history = _history(store, [r.run_id for r in store.runs()])
    reader = frame.SessionReader(store)
    return history, compare.verdicts_over_runs(history, reader.medians)


def test_a_farm_scale_trend_shows_what_changed_in_colour_on_one_ratio_axis(tmp_path: Path
                                                                           ) -> None:
    """At farm scale each series is its ratio to its own median on one log axis for every
    board; what changed in the last run is in colour, with intervals, and named; the rest grey."""
    history, verdicts = farm_history(tmp_path / "farm.db")
    for layout in LAYOUTS:
        fig = plots.trends_figure(history, layout, verdicts)
        assert fig is not None and fig.get_figwidth() == pytest.approx(layout.width_in)
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert len(axes) == 2
        assert {ax.get_yscale() for ax in axes} == {"log"}
        assert axes[0].get_ylim() == axes[1].get_ylim()  # one scale for every board
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "board0: m03, last run slower" in legend
        assert "board1: m07, last run failed" in legend
        assert "others: last run no change or inconclusive" in legend
        coloured = {ax.get_title(): [c for c in ax.containers
                                     if isinstance(c, ErrorbarContainer)] for ax in axes}
        assert [len(c) for c in coloured.values()] == [1, 1]
        (slower,) = coloured[axes[0].get_title()]
        ratios = slower.lines[0].get_ydata()
        assert ratios[-1] == pytest.approx(1.5, rel=0.05) and np.median(ratios) == 1.0
        assert slower.has_yerr
        greys = [line for line in axes[0].lines if line.get_color() == plots.TREND_GREY]
        assert len(greys) == 11
        assert axes[0].get_title().startswith("board0: 1 of 12 changed speed")
        assert ISA in " ".join(fig.get_suptitle().split())
        for text in _texts(fig):
            assert 8 <= text.get_fontsize() <= 9, (layout.name, text.get_text())


def test_a_farm_scale_accuracy_trend_shows_what_changed_in_colour(tmp_path: Path) -> None:
    """At farm scale each accuracy series is its change from its own median, in points, on one
    axis: the model that got 4 images fewer right and the one that failed are in colour and
    named, the 22 others grey lines at zero; with few jobs, accuracy itself, every job named."""
    from harness.report import compare

    history, _ = farm_history(tmp_path / "farm.db")
    accuracy = compare.accuracy_over_runs(history)
    for layout in LAYOUTS:
        fig = plots.accuracy_trends_figure(history, layout, accuracy)
        assert fig is not None and fig.get_figwidth() == pytest.approx(layout.width_in)
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in axes] == [
            "board0: 0 of 12 changed top-1 in the last run",
            "board1: 2 of 12 changed top-1 in the last run"]
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert sorted(legend) == ["board1: m05, last run -0.4 points",
                                  "board1: m07, last run failed",
                                  "others: same top-1 as the run before"]
        greys = [line for ax in axes for line in ax.lines if line.get_color() == plots.TREND_GREY]
        assert len(greys) == 22 and all(set(g.get_ydata()) == {0.0} for g in greys)
        (dropped, failed) = [c for c in axes[1].containers if isinstance(c, ErrorbarContainer)]
        points = dropped.lines[0].get_ydata()
        assert points[-1] == pytest.approx(-0.4) and not dropped.has_yerr  # exact
        assert len(failed.lines[0].get_ydata()) == 4
        for text in _texts(fig):
            assert 8 <= text.get_fontsize() <= 9, (layout.name, text.get_text())
    few = history[history["model"].isin(["m00", "m05"])]
    fig = plots.accuracy_trends_figure(few)
    assert fig is not None
    assert sorted(t.get_text() for t in fig.legends[0].get_texts()) == ["m00", "m05"]
    assert fig.axes[0].get_ylabel() == "Top-1 accuracy [%] (95% CI)"


def test_the_accuracy_trend_colours_a_change_by_the_gates_rule(tmp_path: Path) -> None:
    """Found in a review: the farm-scale accuracy trend coloured any change of one image, under
    the gate's threshold (0.1 points), and changes on other images (another count), which the
    gate does not compare; the figure judged by a rule of its own. It draws the caller's
    verdicts (`compare.accuracy_over_runs`), with the gate's threshold."""
    from harness.report import compare

    history, _ = farm_history(tmp_path / "farm.db")
    last = history["run_id"] == history["run_id"].iloc[-1]
    few = (history["device"] == "board0") & (history["model"] == "m01")
    other_images = last & (history["device"] == "board0") & (history["model"] == "m02")
    history.loc[few, "accuracy_n"] = 10_000
    history.loc[few & last, "accuracy_top1"] -= 0.0008  # 8 of the same 10,000: 0.08 points
    history.loc[other_images, "accuracy_n"] = 500
    history.loc[other_images, "accuracy_top1"] -= 0.05
    fig = plots.accuracy_trends_figure(history, plots.DOUBLE, compare.accuracy_over_runs(history))
    assert fig is not None
    assert fig.axes[0].get_title() == "board0: 0 of 12 changed top-1 in the last run"
    fig = plots.accuracy_trends_figure(history, plots.DOUBLE, compare.accuracy_over_runs(
        history, top1_threshold=0.05))
    assert fig is not None
    assert fig.axes[0].get_title() == "board0: 1 of 12 changed top-1 in the last run"
    assert "board0: m01, last run -0.1 points" in [t.get_text()
                                                   for t in fig.legends[0].get_texts()]


def test_a_trend_leaves_out_jobs_measured_once() -> None:
    """A device whose first run is the last one has no trend yet: no panel of lines at 1.0;
    panels count only the jobs they draw."""
    rows = []
    for night, device, median in ((1, "pi5", 10.0), (2, "pi5", 10.5), (2, "jetson", 4.0)):
        rows.append({"run_id": f"r{night}", "run_started_at": f"2026-12-0{night}T02:00:00Z",
                     "device": device, "model": "net", "runtime": "onnxruntime",
                     "status": "ok", "latency_median_ms": median,
                     "latency_ci95_low_ms": median * 0.95, "latency_ci95_high_ms": median * 1.05,
                     "isa": ISA})
    # and a model that never ran: nothing of it is drawn, so it is not counted either
    rows.append({**rows[1], "model": "broken", "status": "unsupported",
                 "latency_median_ms": None})
    history = pd.DataFrame(rows)
    fig = plots.trends_figure(history)
    assert fig is not None
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["pi5: 0 of 1 changed speed in the last run"], titles
    assert plots.trends_figure(history[history["device"] == "jetson"]) is None


def test_names_with_dollar_signs_are_drawn_as_written(tmp_path: Path) -> None:
    """Device and model names are the user's text, not TeX: a pair of '$' in them used to stop
    `edgebench report` in matplotlib's math parser (or draw them as maths). Every figure is
    drawn and every name reads as written."""
    device, model = r"pi$\frac$", r"net$\frac$_1"
    store = Store(tmp_path / "x.db")
    runs = []
    for night in range(3):
        run = store.begin_run("edgebench nightly", "demo", [device])
        with store.transaction() as conn:
            conn.execute("UPDATE runs SET started_at = ? WHERE run_id = ?",
                         (f"2026-12-{night + 1:02d}T02:00:00Z", run))
        add_job(store, run, model, device=device, accuracy_top1=0.70,
                samples_ns=sessions_ns(20.0, seed=night), size_bytes=46_000_000)
        add_job(store, run, f"{model}-int8", device=device, baseline=model, accuracy_top1=0.69,
                samples_ns=sessions_ns(8.0, seed=10 + night), size_bytes=11_800_000)
        store.finish_run(run)
        runs.append(run)
    drawn, named = [], set()
    for name, build in _builders(store, runs[-1], runs).items():
        fig = build(plots.DOUBLE)
        if fig is None:
            continue
        fig.savefig(io.BytesIO(), format="png")  # raised ValueError from the math parser
        drawn.append(name)
        shown = [_drawn_as(t) for t in fig.findobj(Text) if t.get_text()]
        assert all(t is not None for t in shown), (name, shown)  # no name drawn as maths
        named.update(n for n in (device, model) if any(n in t for t in shown))
    fig = plots.accuracy_trends_figure(_history(store, runs))
    fig.savefig(io.BytesIO(), format="png")
    assert all(_drawn_as(t) is not None for t in fig.findobj(Text) if t.get_text())
    assert set(drawn) == set(plots.FIGURE_NAMES) and named == {device, model}


def _drawn_as(text: Text) -> str | None:
    """The characters matplotlib draws for `text`, None where it draws maths (by its rule: an
    even number of unescaped '$'), except the log axes' own tick labels, which are maths."""
    s = text.get_text()
    if not text.get_parse_math():
        return s
    dollars = s.count("$") - s.count(r"\$")
    if dollars and dollars % 2 == 0:
        return s if s.startswith(r"$\mathdefault{") else None
    return s.replace(r"\$", "$")


def quick_store(path: Path) -> tuple[Store, str]:
    """What a user's `bench --quick` run gave (the audit's): two short sessions per
    measurement, top-1 on 449 digits, and sessions that disagree, so that intervals run from
    [0.07, 65] to a million and a torch model's headline from two sessions 230x apart lies far
    above its pooled p90."""
    from harness.agent import protocol
    from tests.test_report_synthetic import lognormal_ns

    quick = dict(protocol.QUICK_SETTINGS)
    store = Store(path)
    run = store.begin_run("edgebench bench --device local --suite demo --quick", "demo",
                          ["local"])

    def two(a: float, b: float, n: tuple[int, int] = (300, 300), seed: int = 0
            ) -> list[np.ndarray]:
        return [lognormal_ns(a, n[0], 0.05, seed), lognormal_ns(b, n[1], 0.05, seed + 1)]

    add_job(store, run, "cnn", device="local", accuracy_top1=444 / 449, accuracy_n=449,
            samples_ns=two(0.081, 0.0813, seed=1), size_bytes=640_212, settings=quick,
            dataset="digits")
    for k, (technique, a, b, right, size) in enumerate((
            ("kd", 0.030, 0.0465, 440, 69_964), ("prune70", 0.20, 0.0172, 437, 212_000),
            ("int8_static", 0.050, 0.052, 443, 171_000), ("svd", 0.124, 0.1244, 428, 55_300))):
        add_job(store, run, f"cnn-{technique}", device="local", baseline="cnn",
                technique=technique, accuracy_top1=right / 449, accuracy_n=449,
                samples_ns=two(a, b, seed=10 + k), size_bytes=size, settings=quick,
                dataset="digits")
    add_job(store, run, "resnet18", runtime="torch", device="local", size_bytes=46_800_000,
            samples_ns=[lognormal_ns(0.4, 480, 0.2, 3), lognormal_ns(96.0, 5, 0.02, 4)],
            settings=quick)
    store.finish_run(run)
    return store, run


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, str,
                                                              dict[tuple[str, str], Figure]]:
    store, run = quick_store(tmp_path_factory.mktemp("quick") / "q.db")
    reader = frame.SessionReader(store)
    df = frame.with_baselines(frame.results_frame(store, [run]), sessions=reader)
    figures = {(name, layout.name): build(layout) for name, build in plots.report_figures(
        df, samples=reader.samples_ms, medians=reader.medians).items() for layout in LAYOUTS}
    return df, run, figures


def test_one_dataset_is_named_with_its_image_count(quick) -> None:
    """Found: with one dataset the accuracy figure and its caption named neither it nor its
    449 images (a Wilson interval of +/-2 points means little without them)."""
    from harness.report import paper

    df, run, figures = quick
    for layout in LAYOUTS:
        (ax,) = [a for a in figures[("accuracy_latency", layout.name)].axes if a.get_title()]
        assert ax.get_title() == "local: digits, 449 images"
    tex = paper.figures_tex(["accuracy_latency"], df, run)
    assert "Top-1 on digits, 449 images." in tex


def test_captions_say_a_quick_protocol_and_the_sessions(quick, tmp_path: Path) -> None:
    """Found: that a run used `--quick` (a 0.2 s window, 2 sessions) was said only in the
    page's command line; a default run's captions say nothing of the protocol."""
    from harness.report import paper

    df, run, _ = quick
    timed = [n for n in plots.FIGURE_NAMES if n not in plots.FILE_FIGURES]
    captions = re.findall(r"^  \\caption\{(.*)\}$", paper.figures_tex(timed, df, run),
                          re.MULTILINE)
    assert captions
    for caption in captions:
        assert "2 sessions (fresh processes, interleaved) per measurement" in caption
        assert "quick protocol (\\texttt{--quick})" in caption and "0.2 s timed window" in caption
    store, first = demo_store(tmp_path / "demo.db")
    demo = frame.with_baselines(frame.results_frame(store, [first]), store)
    assert "protocol" not in paper.figures_tex(["memory"], demo, first)


def _whisker_ends(ax) -> list[tuple[float, float, float, float]]:
    return [(min(xa, xb), max(xa, xb), min(ya, yb), max(ya, yb))
            for c in ax.containers if isinstance(c, ErrorbarContainer)
            for segments in c.lines[2] for (xa, ya), (xb, yb) in segments.get_segments()]


def _arrowheads(ax) -> list[tuple[float, float]]:
    from matplotlib.collections import PathCollection

    return [tuple(o) for c in ax.collections if isinstance(c, PathCollection)
            and not c.get_clip_on() for o in c.get_offsets()]


def test_accuracy_axis_shows_every_wilson_interval_whole(quick) -> None:
    """Found: the axis ended near 94.2 while the lowest point's interval, 95.32 [92.96, 96.92],
    went on to 92.96 with nothing to say so."""
    _, _, figures = quick
    for layout in LAYOUTS:
        (ax,) = [a for a in figures[("accuracy_latency", layout.name)].axes if a.get_title()]
        y0, y1 = ax.get_ylim()
        ends = _whisker_ends(ax)
        assert min(e[2] for e in ends) == pytest.approx(92.96, abs=0.01)
        assert all(y0 <= e[2] and e[3] <= y1 for e in ends), (y0, y1)


def test_whiskers_past_the_axis_end_in_an_arrowhead(quick) -> None:
    """Found: prune70's speedup interval ran to 526.9 off an axis ending at 2.8 with no mark:
    a reader took the frame for the interval's end. Each interval that goes on past the frame
    has an arrowhead there, and the legend says what it means."""
    df, _, figures = quick
    rows = df[~df["is_baseline"]]
    for layout in LAYOUTS:
        fig = figures[("speedup_by_technique", layout.name)]
        ax = fig.axes[0]
        x0, x1 = ax.get_xlim()
        heads = _arrowheads(ax)
        past = (rows["speedup_ci95_high"] > x1).sum() + (rows["speedup_ci95_low"] < x0).sum()
        assert past >= 2 and len(heads) == past
        assert {x for x, _ in heads} <= {x0, x1}
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert plots.CLIPPED_LABEL in legend
        # the latency intervals of the accuracy figure too
        acc = figures[("accuracy_latency", layout.name)]
        (ax,) = [a for a in acc.axes if a.get_title()]
        assert _arrowheads(ax) and plots.CLIPPED_LABEL in [
            t.get_text() for t in acc.legends[0].get_texts()]


def test_heatmap_greys_out_speedups_whose_interval_includes_1(quick) -> None:
    """Found: cnn-kd's 2.20 was among the strongest colours with an interval of [0.07, 65]. A
    cell whose interval includes 1 is grey and hatched, its figure still written; the legend
    says why."""
    from matplotlib.patches import Rectangle

    df, _, figures = quick
    rows = df[~df["is_baseline"] & df["speedup"].notna()].sort_values("model")
    inconclusive = ((rows["speedup_ci95_low"] <= 1) & (rows["speedup_ci95_high"] >= 1)).to_numpy()
    assert inconclusive.any() and not inconclusive.all()
    for layout in LAYOUTS:
        fig = figures[("speedup_heatmap", layout.name)]
        ax = fig.axes[0]
        hatched = sorted(round(p.get_y() + 0.5) for p in ax.patches
                         if isinstance(p, Rectangle) and p.get_hatch())
        names = [t.get_text() for t in ax.get_yticklabels()]
        assert hatched == [names.index(m) for m in rows["model"][inconclusive]]
        coloured = np.ma.getmaskarray(ax.images[0].get_array())
        assert (~coloured).sum() == (~inconclusive).sum()
        assert "95% CI includes 1" in " ".join(t.get_text() for t in fig.legends[0].get_texts())


def test_heatmap_says_why_a_variant_measured_has_no_speedup(quick) -> None:
    """Found in a review: an unsupported or failed variant left a blank cell, as if it had not
    been measured, and a device on which no variant ran lost its column. Each such cell says
    why in italics; a variant whose fp32 baseline failed there says it has no baseline."""
    df, _, _ = quick
    local = df[df["device"] == "local"]
    variants = local[~local["is_baseline"] & local["speedup"].notna()]
    failed_model = variants["model"].iloc[0]
    nothing = ["speedup", "speedup_ci95_low", "speedup_ci95_high"]
    # on coral nothing ran; on pi the baseline failed, so the ok variants have no speedup
    coral = local.assign(device="coral", status="unsupported")
    coral.loc[:, nothing] = np.nan
    pi = local.assign(device="pi")
    pi.loc[:, nothing] = np.nan
    pi.loc[pi["is_baseline"], "status"] = "failed"
    here = local.copy()
    here.loc[here["model"] == failed_model, ["status", *nothing]] = ["failed", *[np.nan] * 3]
    data = pd.concat([here, coral, pi], ignore_index=True)
    for layout in LAYOUTS:
        fig = plots.speedup_heatmap_figure(data, layout)
        assert fig is not None
        ax = fig.axes[0]
        columns = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
        assert sorted(set(columns)) == ["coral", "local", "pi"]
        models = [t.get_text() for t in ax.get_yticklabels()]
        said = {(models[round(t.get_position()[1])], columns[round(t.get_position()[0])]):
                t.get_text() for t in ax.texts}
        words = plots.NO_SPEEDUP_SHORT if layout is plots.SINGLE else {
            word: word for word in plots.NO_SPEEDUP_SHORT}  # 3 columns across 3.3 in: short
        for model in variants["model"]:
            assert said[(model, "coral")] == words["unsupported"]
            assert said[(model, "pi")] == words["no baseline"]
            speedup = variants.set_index("model").at[model, "speedup"]
            assert said[(model, "local")] == ("failed" if model == failed_model
                                               else f"{speedup:.2f}")
        legend = " ".join(t.get_text() for t in fig.legends[0].get_texts()).replace("\n", " ")
        assert plots.NO_SPEEDUP_LABEL in legend
    # a paper's caption says what the words mean where there are any, and only there
    from harness.report import paper
    assert "A word in italics" in paper.figure_facts("speedup_heatmap", data)
    assert "A word in italics" not in paper.figure_facts("speedup_heatmap", local[
        local["is_baseline"] | local["speedup"].notna()])


def test_speedup_bars_whose_interval_includes_1_are_hatched(quick) -> None:
    """Found in an audit: solid bars of 1.60 [0.57, 4.50] and 2.04 [0.70, 5.95] read as wins
    that the heatmap hatched. A bar whose interval includes 1 is grey and hatched here too."""
    df, _, figures = quick
    rows = df[~df["is_baseline"] & df["speedup"].notna()]
    unsure = {round(float(s), 6) for s, lo, hi in zip(rows["speedup"], rows["speedup_ci95_low"],
                                                      rows["speedup_ci95_high"], strict=True)
              if not (lo > 1 or hi < 1)}
    assert unsure and len(unsure) < len(rows)
    for layout in LAYOUTS:
        fig = figures[("speedup_by_technique", layout.name)]
        bars = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)]
        hatched = {round(1 + p.get_width(), 6) for p in bars if p.get_hatch()}
        assert hatched == unsure
        assert "95% CI includes 1" in " ".join(t.get_text() for t in fig.legends[0].get_texts())


def test_bar_labels_keep_three_significant_digits(quick) -> None:
    """Found: 69,964 bytes read "0.07" beside "0.0553"."""
    _, _, figures = quick
    ax = figures[("model_size", "double")].axes[0]
    shown = {t.get_text() for t in ax.texts if t.get_fontweight() != "bold"}
    assert {"0.0700", "0.0553", "0.640", "46.8"} <= shown


def uneven_sessions_store(path: Path) -> tuple[Store, str]:
    """The audit's case: a baseline whose sessions settled at 13.6, 30.5, 88.1, 98.0 and 127.9 ms,
    the fast one running 7x the iterations of the others, so that its samples are most of the
    pool; and an int8 variant steady at 40 ms, which the tables call faster than its baseline
    while the pooled median of the baseline's samples lies near 14 ms."""
    from tests.test_report_synthetic import lognormal_ns

    store = Store(path)
    run = store.begin_run("edgebench bench --suite demo", "demo", ["local"])
    levels = (13.6, 30.5, 88.1, 98.0, 127.9)
    add_job(store, run, "net", device="local", samples_ns=[
        lognormal_ns(ms, 700 if k == 0 else 100, 0.03, seed=k) for k, ms in enumerate(levels)])
    add_job(store, run, "net-int8", device="local", baseline="net", technique="int8_static",
            samples_ns=sessions_ns(40.0, n=100, seed=7))
    store.finish_run(run)
    return store, run


def test_latency_distributions_mark_the_tables_headline_on_each_row(tmp_path: Path) -> None:
    """Found: the boxes' median line, the median of all samples pooled, was the figure's main
    mark; a fast session with 7x the iterations set it 5x from the headline, and int8 looked
    slower than fp32 where the table said the reverse. Each row carries its headline (the
    tables' Median) with its 95% interval, named in the legend, and the axis shows them."""
    store, run = uneven_sessions_store(tmp_path / "u.db")
    reader = frame.SessionReader(store)
    df = frame.with_baselines(frame.results_frame(store, [run]), sessions=reader)
    pooled = np.median(reader.samples_ms(df.loc[df["is_baseline"], "job_id"].iloc[0]))
    base = df[df["is_baseline"]].iloc[0]
    assert base["latency_median_ms"] > 3 * pooled  # the case: box and headline far apart
    for layout in LAYOUTS:
        fig = plots.latency_distribution_figure(df, layout, reader.samples_ms, reader.medians)
        assert fig is not None
        ax = fig.axes[0]
        rows = dict(zip([t.get_text() for t in ax.get_yticklabels()], ax.get_yticks(),
                        strict=True))
        marks = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(marks) == 1 and marks[0].has_xerr
        points = {round(y, 6): x for x, y in marks[0].lines[0].get_xydata()}
        ends = {round(ya, 6): (min(xa, xb), max(xa, xb))
                for (xa, ya), (xb, _) in (s for s in marks[0].lines[2][0].get_segments())}
        x0, x1 = ax.get_xlim()
        for _, row in df.iterrows():
            label = "fp32" if row["is_baseline"] else "int8_static"
            # under its row's box, off the whiskers
            y = round(float(rows[next(k for k in rows if label in k)])
                      + plots.HEADLINE_OFFSET, 6)
            assert points[y] == pytest.approx(row["latency_median_ms"])
            assert ends[y] == pytest.approx((row["latency_ci95_low_ms"],
                                             row["latency_ci95_high_ms"]))
            assert x0 <= row["latency_median_ms"] <= x1
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "Median, as in the tables (95% CI)" in legend
        assert "median of all samples pooled" in legend


def test_memory_writes_the_process_peak_beside_its_tick(tmp_path: Path) -> None:
    """Found: the number right of the process-peak tick was the bar's value, 194 beside a tick
    at 204 (the tables' Peak RSS). The number written is the tick's, the tables' Peak RSS,
    beside the tick; a row without a process peak writes its bar's value at the bar's end."""
    store = Store(tmp_path / "m.db")
    run = store.begin_run("edgebench bench --suite demo", "demo", ["local"])
    add_job(store, run, "net", device="local", rss_runtime_mb=60.0, timed_peak_rss_mb=194.0,
            peak_rss_mb=204.0)
    add_job(store, run, "net-int8", device="local", baseline="net", technique="int8_static",
            rss_runtime_mb=60.0, timed_peak_rss_mb=120.0, peak_rss_mb=None)
    store.finish_run(run)
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    for layout in LAYOUTS:
        fig = plots.memory_figure(df, layout)
        assert fig is not None
        ax = fig.axes[0]
        rows = dict(zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()],
                        strict=True))
        numbers = {rows[t.xy[1]]: (t.get_text(), t.xy[0]) for t in ax.texts
                   if t.get_fontweight() != "bold"}
        assert numbers["fp32"] == ("204", 204.0)
        assert numbers["int8_static"] == ("120", 120.0)
        (ticks,) = [c for c in ax.collections if c.get_label() == plots.PROCESS_PEAK_LABEL]
        assert [x for x, _ in ticks.get_offsets() if np.isfinite(x)] == [204.0]
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert plots.PROCESS_PEAK_LABEL in legend


def _memory_store(path: Path, peaks: dict[str, list[float]]) -> tuple[Store, str]:
    """A run of one model per entry of `peaks`, each session's process peak (MiB) as given, the
    timed window's 1 MiB below it, as the agent reports them; the row holds their medians."""
    store = Store(path)
    run = store.begin_run("edgebench bench --suite demo", "demo", ["local"])
    for model, values in peaks.items():
        baseline = None if "-" not in model else model.split("-")[0]
        job = add_job(store, run, model, device="local", baseline=baseline,
                      samples_ns=sessions_ns(5.0, seed=len(values))[: len(values)],
                      peak_rss_mb=float(np.median(values)),
                      timed_peak_rss_mb=float(np.median(values)) - 1)
        for session, value in enumerate(values):
            store.conn.execute("UPDATE sessions SET peak_rss_mb = ?, timed_peak_rss_mb = ? "
                               "WHERE job_id = ? AND session = ?",
                               (value, value - 1, job, session))
    store.conn.commit()
    store.finish_run(run)
    return store, run


def _memory_whiskers(fig: Figure) -> dict[str, tuple[float, float]]:
    """The whiskers of a memory figure's panel, (low, high) by row label."""
    ax = fig.axes[0]
    rows = dict(zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()], strict=True))
    out = {}
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            (bars,) = container.lines[2]
            for (x0, y0), (x1, _) in bars.get_segments():
                out[rows[y0]] = (min(x0, x1), max(x0, x1))
    return out


def test_memory_shows_the_range_over_sessions_and_says_so(tmp_path: Path) -> None:
    """Found by a paper's reader: every latency figure shows its spread, the memory figure one
    value per measurement. The number's whisker spans its lowest to its highest session, the
    number is written right of it, and the key and the caption say what the whisker is; a
    measurement whose sessions agree has none."""
    store, run = _memory_store(tmp_path / "m.db", {"net": [200.0, 204.0, 230.0, 199.0, 205.0],
                                                   "net-int8": [120.0] * 5})
    reader = frame.SessionReader(store)
    df = frame.with_memory_ranges(frame.with_baselines(frame.results_frame(store, [run]),
                                                       sessions=reader), reader)
    for layout in LAYOUTS:
        fig = plots.memory_figure(df, layout)
        assert fig is not None
        assert _memory_whiskers(fig) == {"fp32": (199.0, 230.0)}
        ax = fig.axes[0]
        (number,) = [t for t in ax.texts if t.get_text() == "204"]
        assert number.xy[0] == 230.0  # beside the whisker's end, not over its cap
        assert plots.SESSION_RANGE_LABEL in [t.get_text() for t in fig.legends[0].get_texts()]
    assert "lowest to the highest session" in paper.figure_facts("memory", df)


def test_memory_of_one_session_draws_and_claims_no_whisker(tmp_path: Path) -> None:
    store, run = _memory_store(tmp_path / "m.db", {"net": [204.0], "net-int8": [120.0]})
    reader = frame.SessionReader(store)
    df = frame.with_memory_ranges(frame.with_baselines(frame.results_frame(store, [run]),
                                                       sessions=reader), reader)
    fig = plots.memory_figure(df, plots.DOUBLE)
    assert fig is not None
    assert _memory_whiskers(fig) == {}
    assert plots.SESSION_RANGE_LABEL not in [t.get_text() for t in fig.legends[0].get_texts()]
    assert "whisker" not in paper.figure_facts("memory", df)
    # nor does the report's page say so, nor a frame read without the sessions draw one
    page = (run_report(store.path, run, out=tmp_path / "r") / "index.html").read_text()
    assert "whisker on the number" not in page
    bare = plots.memory_figure(frame.with_baselines(frame.results_frame(store, [run])),
                               plots.DOUBLE)
    assert bare is not None and _memory_whiskers(bare) == {}


def test_the_report_page_says_what_the_memory_whisker_is(tmp_path: Path) -> None:
    store, run = _memory_store(tmp_path / "m.db", {"net": [200.0, 204.0, 230.0]})
    page = (run_report(store.path, run, out=tmp_path / "r") / "index.html").read_text()
    assert "whisker on the number spans the lowest to the highest session" in page


def test_row_headers_stay_clear_of_the_axis_in_a_single_column(tmp_path: Path) -> None:
    """Found in a demo run's single-column PDFs: "mobilenet_v3_small / onnxruntime", set on one
    line, ran past the y axis, whose spine cut through it. Every header lies within the label
    area (broken after its " / " where the labels are narrower), in every row chart, and where
    no break is enough (labels of four letters) the label area grows to hold it."""
    store = Store(tmp_path / "h.db")
    run = store.begin_run("edgebench bench --suite demo", "demo", ["local"])
    for runtime in ("onnxruntime", "tflite"):
        add_job(store, run, "digits_cnn", device="local", runtime=runtime,
                samples_ns=sessions_ns(0.06, seed=1))
        add_job(store, run, "digits_cnn-int8", device="local", runtime=runtime,
                baseline="digits_cnn", technique="int8_static", samples_ns=sessions_ns(0.05))
        add_job(store, run, "mobilenet_v3_small", device="local", runtime=runtime,
                samples_ns=sessions_ns(2.0, seed=2))
        add_job(store, run, "resnet18", device="local", runtime=runtime,
                samples_ns=sessions_ns(30.0, seed=3))
        add_job(store, run, "resnet18-prune50", device="local", runtime=runtime,
                baseline="resnet18", technique="prune50", samples_ns=sessions_ns(20.0, seed=4))
    store.finish_run(run)
    reader = frame.SessionReader(store)
    df = frame.with_baselines(frame.results_frame(store, [run]), sessions=reader)
    only_baselines = df[df["is_baseline"]]  # every row label "fp32": narrower than any header
    builds = {
        "memory": lambda lay: plots.memory_figure(df, lay),
        "latency_distributions": lambda lay: plots.latency_distribution_figure(
            df, lay, reader.samples_ms, reader.medians),
        "speedup_by_technique": lambda lay: plots.speedup_figure(df, lay),
        "memory, baselines": lambda lay: plots.memory_figure(only_baselines, lay),
    }
    for (name, build), layout in itertools.product(builds.items(), LAYOUTS):
        fig = build(layout)
        assert fig is not None, name
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            headers = [t for t in ax.texts if t.get_fontweight() == "bold"]
            if name != "speedup_by_technique":  # baselines have no speedup: a family each
                assert {h.get_text().replace("\n", " ") for h in headers} >= {
                    "mobilenet_v3_small / onnxruntime", "resnet18 / tflite"}, name
            spine = ax.spines["left"].get_window_extent(renderer).x0
            for header in headers:
                box = header.get_window_extent(renderer)
                assert box.x1 < spine - 1, (name, layout.name, header.get_text())
                assert box.x0 >= 0, (name, layout.name, header.get_text())
    assert not _tick_overlaps(builds["memory"](plots.SINGLE))


def _trend_rows(medians: dict[str, list[float]], device: str = "pi5",
                width: float = 0.05) -> pd.DataFrame:
    """A history of one device: each model's medians over nights, each with an interval of
    +/-`width` (relative)."""
    rows = []
    for model, series in medians.items():
        for night, median in enumerate(series):
            rows.append({"run_id": f"r{night}", "run_started_at": f"2026-12-{night + 1:02d}T02:00Z",
                         "device": device, "model": model, "runtime": "onnxruntime",
                         "status": "ok", "latency_median_ms": median,
                         "latency_ci95_low_ms": median * (1 - width),
                         "latency_ci95_high_ms": median * (1 + width), "isa": ISA})
    return pd.DataFrame(rows)


def test_trend_ratio_ticks_never_overlap() -> None:
    """Found: on a trend spanning 0.3x to 3x, "1.1", "1" and "0.9" were written on top of each
    other: every round ratio inside the limits got a tick. Only those whose labels have room
    are kept, 1 and the roundest first."""
    history = _trend_rows({"net": [3.0, 10.0, 30.0, 10.0], "cnn": [1.0, 1.02, 0.98, 1.0]})
    for layout in LAYOUTS:
        fig = plots.trends_figure(history, layout)
        assert fig is not None
        assert not _tick_overlaps(fig), (layout.name, _tick_overlaps(fig))
        fig.canvas.draw()
        (ax,) = fig.axes
        shown = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert "1" in shown and {"0.5", "2"} <= set(shown), shown
    narrow = plots.trends_figure(_trend_rows({"net": [10.0, 10.3, 9.8]}, width=0.01))
    assert narrow is not None
    narrow.canvas.draw()
    assert len([t for t in narrow.axes[0].get_yticklabels() if t.get_text()]) >= 2


def test_trend_intervals_past_the_axis_end_in_an_arrowhead() -> None:
    """Found: a trend's interval that ran past the axis was cut at the frame with nothing to say
    so, as the other figures' are not (`_mark_clipped`): each gets an arrowhead there, and the
    legend says what it means."""
    history = _trend_rows({"net": [10.0, 10.5, 9.5, 10.2]}, width=0.05)
    wide_night = history["run_id"] == "r2"
    history.loc[wide_night, "latency_ci95_low_ms"] = 0.5  # two sessions far apart
    history.loc[wide_night, "latency_ci95_high_ms"] = 200.0
    for layout in LAYOUTS:
        fig = plots.trends_figure(history, layout)
        assert fig is not None
        (ax,) = fig.axes
        y0, y1 = ax.get_ylim()
        assert y0 > 0.5 / 10.1 and y1 < 200 / 10.1  # the interval runs past both ends
        heads = set(_arrowheads(ax))
        ratio = history["latency_median_ms"].median()
        past = {(float(x), y0) for x, v in enumerate(history["latency_ci95_low_ms"] / ratio)
                if v < y0} | {(float(x), y1) for x, v in enumerate(
                    history["latency_ci95_high_ms"] / ratio) if v > y1}
        assert {(2.0, y0), (2.0, y1)} <= past and heads == past
        assert plots.CLIPPED_LABEL in [t.get_text() for t in fig.legends[0].get_texts()]


def test_runs_begun_within_a_minute_have_ticks_of_their_own() -> None:
    """Two nightlies begun in one minute (a retry, a test farm) were both labelled
    "11-29 16:56": the ticks of such runs go to the second."""
    rows = [{"run_id": f"r{i}", "run_started_at": f"2026-11-29T16:56:{10 * i:02d}Z",
             "device": "pi5", "model": "net", "runtime": "onnxruntime", "status": "ok",
             "latency_median_ms": 10.0 + i, "latency_ci95_low_ms": 9.5 + i,
             "latency_ci95_high_ms": 10.5 + i, "isa": ISA} for i in (1, 2)]
    fig = plots.trends_figure(pd.DataFrame(rows))
    assert fig is not None
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["11-29 16:56:10", "11-29 16:56:20"], labels
    rows[1]["run_started_at"] = "2026-11-30T16:56:20Z"  # a day apart: to the minute, as before
    fig = plots.trends_figure(pd.DataFrame(rows))
    assert fig is not None
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["11-29 16:56", "11-30 16:56"]


def test_a_trend_spans_at_least_the_threshold_band() -> None:
    """Found: two runs 2% apart, their 95% intervals about +/-35%, gave an axis from 0.99 to
    1.01: the line fell steeply and both intervals ran off the frame. The axis spans at least
    [1/(1+T), 1+T], T the threshold the runs are judged by, so that a change within it never
    looks large; a larger change still fills the panel."""
    history = _trend_rows({"net": [10.0, 9.8]}, width=0.35)
    for threshold in (0.05, 0.1):
        for layout in LAYOUTS:
            fig = plots.trends_figure(history, layout, threshold=threshold)
            assert fig is not None
            y0, y1 = fig.axes[0].get_ylim()
            assert y0 <= 1 / (1 + threshold) and y1 >= 1 + threshold, (threshold, y0, y1)
            assert y0 > 0.8 / (1 + threshold) and y1 < 1.25 * (1 + threshold)  # not far past
    fig = plots.trends_figure(_trend_rows({"net": [10.0, 20.0, 40.0]}, width=0.02))
    assert fig is not None
    y0, y1 = fig.axes[0].get_ylim()
    assert y0 < 0.5 and y1 > 2.0  # the data, as before


def _runtimes_store(path: Path, devices: list[str]) -> pd.DataFrame:
    """A run of two variants of one model on each of `devices` with two runtimes each."""
    store = Store(path)
    run = store.begin_run("edgebench bench --suite demo", "demo", devices)
    for d, device in enumerate(devices):
        for r, runtime in enumerate(("onnxruntime", "tflite")):
            seed = 10 * d + 3 * r
            add_job(store, run, "mobilenet_v3_small", device=device, runtime=runtime,
                    samples_ns=sessions_ns(10.0, seed=seed))
            for k, (technique, ms) in enumerate((("int8", 5.0 + r), ("prune50", 9.9))):
                add_job(store, run, f"mobilenet_v3_small-{technique}", device=device,
                        baseline="mobilenet_v3_small", runtime=runtime,
                        samples_ns=sessions_ns(ms, seed=seed + 1 + k))
    store.finish_run(run)
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    store.close()
    return df


def test_heatmap_column_labels_never_touch(tmp_path: Path) -> None:
    """Found: in the single-column heatmap the columns of a device that ran two runtimes,
    "local / onnxruntime" and "local / tflite" on two lines each, were set upright so close
    that "onnxruntime" and "tflite" nearly touched (with three such devices, ran into each
    other). Where a label is wider than its cell it stands on end, and the figure grows by
    its height rather than the cells shrink."""
    for devices in (["local"], ["local", "rpi5", "jetson_orin"]):
        df = _runtimes_store(tmp_path / f"{len(devices)}.db", devices)
        for layout in LAYOUTS:
            fig = plots.speedup_heatmap_figure(df, layout)
            assert fig is not None
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            ax = fig.axes[0]
            boxes = [t.get_window_extent(renderer).padded(plots.FONT_PT / 8 * fig.dpi / 72)
                     for t in ax.get_xticklabels() if t.get_text()]
            assert len(boxes) == 2 * len(devices)
            for a, b in itertools.combinations(boxes, 2):
                assert not a.overlaps(b), (devices, layout.name)
            # the cells keep the height of two rows of text
            assert ax.get_window_extent().height / fig.dpi >= 2 * 0.2, (devices, layout.name)
            # and the figures in a row never run into each other: found in a review, six
            # columns beside the colour bar in a single column set "0.720.81" as one; the
            # bar goes below the cells where they would
            figures = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]
            assert figures, (devices, layout.name)
            for a, b in itertools.combinations(figures, 2):
                assert not a.overlaps(b), (devices, layout.name, a, b)
