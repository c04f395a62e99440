"""What 1 means on the latency trend of a job whose file was rebuilt: the median of its last
file, the one measured now, so that tonight's point reads against the current build and the old
file's points say how far the rebuild moved it. Found: the median over every run shown mixed
both files, and which of them read as 1 went by how many runs each had (5 runs of a 10 ms file
and 2 of a rebuilt 5 ms one put the current file at 0.5, "half the usual"). Histories come from
a real store, as the nightly and the report read them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer

from harness.report import compare, nightly, plots, stats
from harness.store import Store
from tests.test_report_trends_rebuilt import SHA_A, SHA_B, SHA_C, nights


def _ratios(ax: Axes) -> dict[str, list[list[float]]]:
    """Each legend label's drawn lines, as the y of their points: one list per file."""
    out: dict[str, list[list[float]]] = {}
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            line = container.lines[0]
            assert line is not None
            out.setdefault(str(container.get_label()), []).append(
                [float(y) for y in line.get_ydata()])
    return out


def _trend(tmp_path: Path, shas: dict[str, list[str | None]],
           medians: dict[str, list[float]]) -> tuple[Axes, dict[str, list[list[float]]]]:
    store = Store(tmp_path / "x.db")
    runs = nights(store, shas, medians)
    fig = plots.trends_figure(nightly.history(store, runs, ["pi5"]))
    assert fig is not None
    (ax,) = fig.axes
    return ax, _ratios(ax)


@pytest.mark.parametrize("old_runs,new_runs", [(5, 2), (3, 4)])
def test_a_rebuilt_files_points_sit_at_1_however_many_runs_each_file_had(
        tmp_path: Path, old_runs: int, new_runs: int) -> None:
    """The current file at 1 and the old one at 2, both for 5 old runs and 2 new and for 3 and
    4: the median over all of them made the current file 0.5 in the first case, 1 in the
    second."""
    _, ratios = _trend(tmp_path, {"net": [SHA_A] * old_runs + [SHA_B] * new_runs},
                       {"net": [10.0] * old_runs + [5.0] * new_runs})
    (old, current) = ratios["net"]
    assert len(old) == old_runs and len(current) == new_runs
    assert np.median(current) == pytest.approx(1.0)
    assert current == pytest.approx([1.0] * new_runs, rel=0.02)
    assert old == pytest.approx([2.0] * old_runs, rel=0.02)  # how far the rebuild moved it


def test_a_file_rebuilt_twice_reads_against_its_last_file(tmp_path: Path) -> None:
    """Only the last file's runs make the reference; each earlier file reads against it."""
    _, ratios = _trend(tmp_path, {"net": [SHA_A] * 3 + [SHA_B] * 2 + [SHA_C] * 2},
                       {"net": [10.0] * 3 + [20.0] * 2 + [5.0] * 2})
    first, second, last = ratios["net"]
    assert first == pytest.approx([2.0] * 3, rel=0.02)
    assert second == pytest.approx([4.0] * 2, rel=0.02)
    assert last == pytest.approx([1.0] * 2, rel=0.02)


def test_a_job_never_rebuilt_reads_against_its_median_over_every_run(tmp_path: Path) -> None:
    """A series of one file is drawn as before, whichever other series was rebuilt; a sha256
    that appears where none was recorded is no rebuild either. The axis says which median
    where a file was rebuilt, and still spans the threshold's band around 1."""
    ax, ratios = _trend(
        tmp_path,
        {"net": [SHA_A] * 5 + [SHA_B] * 2, "same": [SHA_C] * 7, "late": [None] * 3 + [SHA_C] * 4},
        {"net": [10.0] * 5 + [5.0] * 2, "same": [8.0, 8.0, 8.0, 8.0, 8.0, 12.0, 12.0],
         "late": [6.0] * 4 + [9.0] * 3})
    for job in ("same", "late"):
        (line,) = ratios[job]
        assert np.median(line) == pytest.approx(1.0)
        assert line == pytest.approx([1.0] * 5 + [1.5] * 2 if job == "same"
                                     else [1.0] * 4 + [1.5] * 3, rel=0.02)
    assert ax.get_ylabel() == "Latency / last file's median"
    low, high = ax.get_ylim()
    assert low <= 1 / (1 + stats.THRESHOLD) and high >= 2.0


def test_without_a_rebuild_the_axis_says_its_median(tmp_path: Path) -> None:
    ax, ratios = _trend(tmp_path, {"net": [SHA_A] * 3}, {"net": [10.0, 10.0, 12.0]})
    ((line,),) = ratios.values()
    assert line == pytest.approx([1.0, 1.0, 1.2], rel=0.02)
    assert ax.get_ylabel() == "Latency / its median"


def test_at_farm_scale_a_rebuilt_jobs_top1_reads_against_its_last_file(tmp_path: Path) -> None:
    """The accuracy trend at farm scale draws each job's top-1 minus its median: for a rebuilt
    job, its last file's, so that the current file sits at 0 and the old one shows the step
    (4 old nights at 70% and 1 new at 74%: the median over all five, 70%, put the current file
    at +4 points and the old one at 0, as if the old file were the reference)."""
    models = [f"m{k:02d}" for k in range(plots.TREND_COLOURED_MAX + 1)]
    shas: dict[str, list[str | None]] = {m: [SHA_C] * 5 for m in models}
    shas["m00"] = [SHA_A] * 4 + [SHA_B]
    top1 = {m: [0.60] * 5 for m in models}
    top1["m00"] = [0.70] * 4 + [0.74]
    store = Store(tmp_path / "farm.db")
    runs = nights(store, shas, {m: [10.0] * 5 for m in models}, top1)
    history = nightly.history(store, runs, ["pi5"])
    fig = plots.accuracy_trends_figure(history, plots.DOUBLE,
                                       compare.accuracy_over_runs(history))
    assert fig is not None
    (ax,) = (a for a in fig.axes if a.get_visible())
    (old, current) = _ratios(ax)["pi5: m00, last run +4.0 points"]
    assert current == pytest.approx([0.0])
    assert old == pytest.approx([-4.0] * 4)  # the rebuild's step, in points
    assert ax.get_ylabel() == "Top-1 minus last file's median [points]"
