"""The report's figures, in one print-ready style, for a page (PNG) and for papers (PDF).

Every figure is built by a `*_figure(data, layout)` function on a bare `matplotlib.figure.Figure`
(no pyplot state, no GUI backend) for a `Layout`: a single column of a two-column paper (3.3 in)
or both columns (7 in), with every text at 8-9 pt so that it matches the body text of the common
templates when included at its own width. The HTML report shows the double-column figure as a PNG;
`edgebench report --style paper` also writes both widths as PDF with TrueType (Type 42) fonts
embedded (`harness.report.paper`). `save` writes a built figure in the formats asked for;
`trends(history, folder)` and `accuracy_trends`, the nightly page's figures, build and save in
one call.

One style throughout: the Okabe-Ito palette, which stays distinguishable with the common
colour-vision deficiencies; marker shapes, hatches and row labels as second cues, so that every
figure reads in greyscale; a log axis wherever the values span more than a decade; axes limited
to the data, with intervals longer than the data's range running off the edge to an arrowhead
on the frame (`_mark_clipped`); every figure
states the CPU instruction set it was measured on. Plots only draw: every figure and verdict they
show comes computed from the frame or from the caller. A function returns None (or no files) when
there is nothing to show: no empty figures.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import sys
import textwrap
import traceback
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib import cbook
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, Locator, LogLocator, NullFormatter, NullLocator

from harness.report import stats
from harness.report.frame import distinct, in_run_order, pareto_front, variant_label
from harness.report.labels import place_labels
from harness.report.tables import accuracy_sets

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
BASELINE_COLOUR = "#555555"
RUNTIME_COLOUR = "#BBBBBB"
FONT_PT = 8  # every text; panel titles 9
TITLE_PT = 9
STYLE: dict[str, Any] = {
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "font.family": "DejaVu Sans",
    "font.size": FONT_PT,
    "axes.titlesize": TITLE_PT,
    "axes.titleweight": "bold",
    "axes.labelsize": FONT_PT,
    "legend.fontsize": FONT_PT,
    "legend.title_fontsize": FONT_PT,
    "xtick.labelsize": FONT_PT,
    "ytick.labelsize": FONT_PT,
    "figure.titlesize": FONT_PT,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.0,
    "hatch.linewidth": 0.6,
    "legend.frameon": False,
    "figure.dpi": 100,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "figure.constrained_layout.use": True,
}
# Row pitch of the horizontal bar and box charts: two lines of 8 pt text fit.
ROW_IN = 0.19
# The tallest figure, with its titles and legend: what a page of a two-column paper (US letter
# or A4, about 9 in of text) holds beside a long caption; figures.tex caps it at 0.72 of the
# page's text height as well. Taller charts are compacted to fit: their rows come closer.
MAX_HEIGHT_IN = 6.5
# On the HTML page a figure may be as tall as its rows need (a page scrolls): a suite of 40
# measurements compacted to a paper page set its labels into each other. This bounds only a
# runaway figure (a few hundred rows).
SCREEN_MAX_HEIGHT_IN = 40.0
# What a figure adds to its panels: the frame `_figure` gives them, and at most what the ISA
# lines and the legend below add (`_isa_title`, `_legend`) in the figures here.
FRAME_IN = 0.9
EXTRAS_IN = 1.0


@dataclass(frozen=True)
class Layout:
    """Where a figure goes: its width and how many panels (one per device) sit side by side."""

    name: str
    width_in: float
    columns: int
    max_height_in: float = MAX_HEIGHT_IN


SINGLE = Layout("single", 3.3, 1)
DOUBLE = Layout("double", 7.0, 2)
# The HTML page's figures: the double column's, as tall as they need to be.
SCREEN = Layout("screen", DOUBLE.width_in, DOUBLE.columns, SCREEN_MAX_HEIGHT_IN)
LAYOUTS = {layout.name: layout for layout in (SINGLE, DOUBLE, SCREEN)}
# 7 in at 130 dpi is 910 pixels, sharp on a screen and a third of the pixels (and time) of print
# resolution.
SCREEN_DPI = 130
FigureBuilder = Callable[[Layout], "Figure | None"]


@contextmanager
def paper_style() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        yield


def save(fig: Figure, folder: Path, name: str, formats: Sequence[str] = ("png",),
         dpi: int = SCREEN_DPI) -> list[Path]:
    """Write `fig` as `folder/name.<format>` for each format; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        # No creation date: the same run gives byte-identical files from one report to the next.
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
        with paper_style():
            fig.savefig(path, metadata=metadata, dpi=dpi)
        paths.append(path)
    return paths


def _figure(layout: Layout, n: int, panel_height: float | Sequence[float]
            ) -> tuple[Figure, list[Axes]]:
    """A figure of the layout's width with `n` panels, `layout.columns` side by side at most;
    `panel_height` in inches (one per row of panels, or one for all)."""
    cols = max(1, min(layout.columns, n))
    rows = math.ceil(n / cols)
    heights = [panel_height] * rows if isinstance(panel_height, float | int) else list(
        panel_height)
    room = layout.max_height_in - FRAME_IN - EXTRAS_IN
    scale = min(1.0, room / sum(heights))
    if scale < 1:  # many models or devices: compact the panels to fit a page
        heights = [h * scale for h in heights]
    fig = Figure(figsize=(layout.width_in, sum(heights) + FRAME_IN), layout="constrained")
    _COMPACTED[fig] = scale
    FigureCanvasAgg(fig)  # a renderer for measuring text (label placement)
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={"height_ratios": heights})
    flat = axes.ravel().tolist()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


# How much `_figure` compacted each figure's panels to fit its layout (1: not at all).
_COMPACTED: weakref.WeakKeyDictionary[Figure, float] = weakref.WeakKeyDictionary()
# The smallest text a compacted figure's rows are labelled in.
MIN_ROW_PT = 4.0


def row_font_pt(fig: Figure) -> float:
    """The size of what is written on a row (its label, the family's name, a figure beside a
    bar): 8 pt at the row pitch, smaller where the rows were compacted to fit a page (40
    measurements in a paper's figure), so that neighbours never run into each other."""
    pitch_pt = ROW_IN * 72 * _COMPACTED.get(fig, 1.0)
    return max(MIN_ROW_PT, min(FONT_PT, pitch_pt / 1.25))


def _grow(fig: Figure, extra_in: float, layout: Layout) -> None:
    """Make room for a title or legend; never past a page (the panels give way instead)."""
    fig.set_figheight(min(layout.max_height_in, fig.get_figheight() + extra_in))


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def _job_label(names: pd.Series, rows: pd.DataFrame, column: str = "runtime",
               among: pd.DataFrame | None = None) -> pd.Series:
    """`names` (one per row of `rows`) as the figures name jobs: followed by the row's `column`
    where the figure's data (`among`, by default `rows`) holds more than one value of it."""
    # The same model name is measured once per runtime (an ONNX and a TFLite artifact); say which
    # only when it is ambiguous.
    if (rows if among is None else among)[column].nunique(dropna=True) > 1:
        return names + " / " + rows[column].astype(str)
    return names


def _text(name: Any) -> str:
    """A name (device, model, runtime, dataset) as figure text: the user's words, never TeX.
    Matplotlib reads the text between a pair of '$' as maths, so `pi$\\frac$` stopped every
    figure from being drawn; an escaped '$' is drawn as itself. Titles, labels, ticks and legend
    entries built from names go through here; the ISA line is set with maths off instead."""
    return str(name).replace("$", r"\$")


def _family(df: pd.DataFrame, column: str = "runtime") -> pd.Series:
    """The fp32 model (and runtime) each row belongs to: itself for a baseline, else its
    baseline. Compute it on the whole frame, then select, so that labels agree across panels."""
    names = df["baseline"].where(df["baseline"].notna(), df["model"]).astype(str)
    return _job_label(names, df, column)


def _labelled(df: pd.DataFrame, column: str = "runtime") -> pd.DataFrame:
    """`df` with the figure text of each row: `family` (legend entries and row headers) and
    `label` (the variant, on its row or point)."""
    return df.assign(family=_family(df, column).map(_text),
                     label=df.apply(variant_label, axis=1).map(_text))


def _colours(keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    return {
        k: (OKABE_ITO[i % len(OKABE_ITO)], MARKERS[i % len(MARKERS)]) for i, k in enumerate(keys)
    }


def wide(values: np.ndarray) -> bool:
    """True when the positive values span more than a decade: such an axis is drawn log."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    return bool(values.size) and float(values.max() / values.min()) > 10


def _log_ticks(ax: Axes) -> None:
    """The x axis of a log plot, once its limits are set, labelled as a reader writes numbers
    (0.05, 0.1, 0.2), at 1, 2 and 5 of each decade over up to two decades and at each decade
    beyond, with unlabelled minor ticks. matplotlib's default labels minor ticks over a short
    span as 3x10^-2, 4x10^-2, 6x10^-2, which ran into each other in a single column."""
    low, high = ax.get_xlim()
    subs = (1.0, 2.0, 5.0) if math.log10(high / low) <= 2 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _limits(values: np.ndarray, lows: np.ndarray | None = None, highs: np.ndarray | None = None,
            *, log: bool, pad: float = 0.06, reach: float = 0.3) -> tuple[float, float]:
    """Axis limits that show every value with a margin, and each interval up to `reach` times the
    values' range beyond them: an interval wider than that runs off the edge rather than
    squeezing the data into a corner. With a single value there is nothing to squeeze, so its
    interval is shown whole."""
    def fwd(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=float)
        a = a[np.isfinite(a) & (a > 0)] if log else a[np.isfinite(a)]
        return np.log10(a) if log else a

    v = fwd(values)
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo
    if span <= 0:
        span = 0.1 if log else max(abs(hi) * 0.1, 1e-9)
        reach = np.inf
    for bound in (lows, highs):
        if bound is not None and (b := fwd(bound)).size:
            lo = min(lo, max(float(b.min()), lo - reach * span))
            hi = max(hi, min(float(b.max()), hi + reach * span))
    margin = pad * (hi - lo if hi > lo else span)
    lo, hi = lo - margin, hi + margin
    return (10**lo, 10**hi) if log else (lo, hi)


def _errors(centre: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Error bar lengths below and above; none where the interval is not known."""
    return np.vstack([np.nan_to_num(centre - low), np.nan_to_num(high - centre)])


CLIPPED_LABEL = "95% CI runs on past the axis"
_CLIP_MARKERS = {"x": ("<", ">"), "y": ("v", "^")}


def _mark_clipped(ax: Axes, across: np.ndarray, low: np.ndarray, high: np.ndarray, *,
                  axis: str = "x", colours: Sequence[str] | str = "black"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """An arrowhead on the edge of the axis (its limits set) where an interval runs on past it,
    pointing the way it goes: `_limits` fits the axis to the data, not to intervals far wider,
    and a whisker cut at the frame would read as the interval's end. `across`: each interval's
    place on the other axis (its row, or its point's other coordinate). Returns the arrowheads'
    (x, y) in data coordinates, for the labels to keep clear of."""
    edge_low, edge_high = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    colour = np.broadcast_to(np.asarray(colours, dtype=object), np.shape(across))
    xs: list[float] = []
    ys: list[float] = []
    for bound, edge, marker in ((np.asarray(low, float), edge_low, _CLIP_MARKERS[axis][0]),
                                (np.asarray(high, float), edge_high, _CLIP_MARKERS[axis][1])):
        with np.errstate(invalid="ignore"):
            beyond = bound < edge if edge is edge_low else bound > edge
        beyond &= np.isfinite(np.asarray(across, float))
        if not beyond.any():
            continue
        at = np.full(int(beyond.sum()), edge)
        where = np.asarray(across, float)[beyond]
        px, py = (at, where) if axis == "x" else (where, at)
        ax.scatter(px, py, marker=marker, s=14, c=list(colour[beyond]), linewidths=0,
                   clip_on=False, zorder=5)
        xs += list(px)
        ys += list(py)
    return np.asarray(xs), np.asarray(ys)


def _clipped_key() -> tuple[Any, str]:
    return (Line2D([], [], marker=">", color="black", linestyle="", markersize=4),
            CLIPPED_LABEL)


def _isa_title(fig: Figure, df: pd.DataFrame, layout: Layout) -> None:
    """Name the CPU instruction set of each device at the top, and the accelerator (GPU, execution
    provider, delegate) where a model ran on one: the kernels a runtime picks, and so its speed
    and even its int8 accuracy, depend on them."""
    by_platform: dict[str, list[str]] = {}  # devices of one ISA and accelerator: named together
    for device, part in df.groupby("device", sort=True):
        isas, accelerators = distinct(part, "isa"), distinct(part, "accelerator")
        platform = " / ".join(isas) if isas else "not recorded"
        if accelerators:
            platform += ", accelerator " + " / ".join(accelerators)
        by_platform.setdefault(platform, []).append(str(device))
    text = "CPU ISA " + "; ".join(f"{', '.join(devices)}: {platform}"
                                  for platform, devices in by_platform.items())
    # DejaVu Sans at 8 pt sets about 16 characters an inch
    lines = textwrap.wrap(text, width=int(layout.width_in * 16), subsequent_indent="  ")
    fig.suptitle("\n".join(lines), fontsize=FONT_PT, fontweight="normal", ha="left", x=0.01,
                 parse_math=False)  # names from drivers and profiles, never TeX
    _grow(fig, 0.14 * len(lines), layout)


def _legend(fig: Figure, entries: Sequence[tuple[Any, str]], layout: Layout,
            title: str | None = None) -> None:
    """One legend below the panels, as many columns as the longest entry allows."""
    seen: dict[str, Any] = {}
    for handle, label in entries:
        seen.setdefault(label, handle)
    if not seen:
        return
    longest = max(len(line) for label in seen for line in label.split("\n"))
    fits = max(1, int(layout.width_in / (0.35 + 0.065 * longest)))
    ncols = min(len(seen), fits)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=ncols,
               title=title, handlelength=1.6, columnspacing=1.0)
    lines = max(label.count("\n") for label in seen) + 1  # an entry wrapped to fit the width
    _grow(fig, 0.17 * lines * math.ceil(len(seen) / ncols) + (0.17 if title else 0), layout)


def _handles(axes: Sequence[Axes]) -> list[tuple[Any, str]]:
    out: list[tuple[Any, str]] = []
    for ax in axes:
        out.extend(zip(*ax.get_legend_handles_labels(), strict=True))
    return out


def _freeze(fig: Figure) -> None:
    """Lay the figure out now and keep it so: label positions are measured on this layout."""
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
    fig.set_layout_engine("none")


def _text_width_pt(text: str, bold: bool = False, size: float = FONT_PT) -> float:
    """How wide `text` is set in the figures' font, in points (the widest of its lines)."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    renderer = _MEASURE.setdefault("renderer", RendererAgg(1, 1, 72))  # 72 dpi: px are pt
    with paper_style():
        prop = FontProperties(size=size, weight="bold" if bold else "normal")
        return max((renderer.get_text_width_height_descent(line, prop, ismath=False)[0]
                    for line in text.split("\n")), default=0.0)


_MEASURE: dict[str, Any] = {}


def _header_words(name: str) -> list[str]:
    parts = name.split(" / ")
    return [f"{part} /" for part in parts[:-1]] + parts[-1:]


def _header_lines(name: str, room_pt: float) -> str:
    """A family's header (model / runtime) broken after its " / " where it is wider than
    `room_pt`, the label area its row labels need: set on one line, a long one ran past the
    axis, whose spine cut through it ("mobilenet_v3_small / onnxruntime" in a single column)."""
    words = _header_words(name)
    lines: list[str] = []
    for word in words:
        if lines and _text_width_pt(f"{lines[-1]} {word}", bold=True) <= room_pt:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return "\n".join(lines)


def _rows(data: pd.DataFrame, family: str = "family") -> tuple[pd.DataFrame, list[float],
                                                                  list[tuple[float, str]]]:
    """Order rows family by family (the baseline first, then its variants by label) and give
    each a y position, top down, with a header per family when there are several, on as many
    rows as it has lines (`_header_lines`: never wider than the row labels). Returns the rows,
    their positions, and the (centre, text) of each header."""
    data = data.sort_values([family, "is_baseline", "label"], ascending=[True, False, True],
                            kind="stable")
    families = list(dict.fromkeys(data[family]))
    # the labels' width, or the widest piece a header cannot be broken into (`_row_axis` makes
    # room for it)
    room = max([_text_width_pt(str(label)) for label in data["label"]]
               + [_text_width_pt(word, bold=True) for fam in families
                  for word in _header_words(str(fam))] * (len(families) > 1), default=0.0)
    headers = []
    positions = []
    y = 0.0
    for fam in families:
        if len(families) > 1:
            text = _header_lines(str(fam), room)
            lines = text.count("\n") + 1
            headers.append((y + (lines - 1) / 2, text))
            y += lines
        for _ in range((data[family] == fam).sum()):
            positions.append(y)
            y += 1
    return data, positions, headers


def _rows_height(data: pd.DataFrame) -> float:
    """The height of a panel of `_rows(data)`, its headers' lines included."""
    _, positions, headers = _rows(data)
    last = max([*positions, *(p + t.count("\n") / 2 for p, t in headers)], default=0.0)
    return ROW_IN * (last + 1) + 0.55


def _row_axis(ax: Axes, positions: list[float], labels: list[str],
               headers: list[tuple[float, str]]) -> None:
    """Rows labelled by `labels`; each family's name in bold on rows of its own, starting at the
    left of the panel's column of the figure, within the label area: where a header's longest
    line is wider than the labels, the labels stand off the axis to make room for it."""
    size = row_font_pt(ax.get_figure(root=True))  # type: ignore[arg-type]
    ax.set_yticks(positions, labels, fontsize=size)
    spec = ax.get_subplotspec()
    left = 0.0 if spec is None else spec.colspan.start / spec.get_gridspec().ncols
    for position, name in headers:
        header = ax.annotate(name, (left, position), xycoords=("figure fraction", "data"),
                             xytext=(3, 0), textcoords="offset points", ha="left", va="center",
                             fontweight="bold", fontsize=size, annotation_clip=False,
                             linespacing=1.0)
        header.set_in_layout(False)
    widest = max((_text_width_pt(label, size=size) for label in labels), default=0.0)
    need = max((_text_width_pt(name, bold=True, size=size) for _, name in headers),
               default=0.0)
    ax.set_ylim(max([*positions, *(p + n.count("\n") / 2 for p, n in headers)], default=0)
                + 0.7, -0.7)
    ax.grid(axis="y", visible=False)
    # the header starts 3 pt into the label area, which constrained layout makes the labels'
    # width and their pad; a header wider than the labels widens it by what is missing
    pad = matplotlib.rcParams["ytick.major.pad"]
    ax.tick_params(axis="y", length=0, pad=pad + max(0.0, need + 3 - widest - pad))


# --- accuracy against latency ------------------------------------------------------------------


def accuracy_latency_figure(df: pd.DataFrame, layout: Layout = DOUBLE) -> Figure | None:
    """Top-1 accuracy against median latency (the headline, the geometric mean of the session
    medians) per device, with the Pareto front drawn and its points labelled; error bars are the
    95% intervals of both (t over the session medians for latency, Wilson for accuracy)."""
    data = _ok(df)
    data = data[data["accuracy_top1"].notna() & data["latency_median_ms"].notna()]
    if data.empty:
        return None
    # accuracies on different datasets share no scale: a panel per device and dataset
    dataset = data["dataset"].fillna("") if "dataset" in data else pd.Series("", data.index)
    data = _labelled(data).assign(panel_dataset=dataset.astype(str))
    panels = sorted(data.groupby(["device", "panel_dataset"]).groups)
    style = _colours(sorted(data["family"].unique()))
    with paper_style():
        height = 2.4 if layout.width_in < 5 else 2.8
        fig, axes = _figure(layout, len(panels), height)
        labelled: list[tuple[Axes, np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray,
                             list[tuple[float, float, float, float]]]] = []
        clipped = False
        for ax, (device, set_name) in zip(axes, panels, strict=True):
            part = data[(data["device"] == device) & (data["panel_dataset"] == set_name)]
            x = part["latency_median_ms"].to_numpy(float)
            y = part["accuracy_top1"].to_numpy(float) * 100
            x_low = part["latency_ci95_low_ms"].to_numpy(float)
            x_high = part["latency_ci95_high_ms"].to_numpy(float)
            y_low = part["accuracy_top1_low"].to_numpy(float) * 100
            y_high = part["accuracy_top1_high"].to_numpy(float) * 100
            for fam in style:
                sel = (part["family"] == fam).to_numpy()
                if not sel.any():
                    continue
                colour, marker = style[fam]
                ax.errorbar(x[sel], y[sel], xerr=_errors(x, x_low, x_high)[:, sel],
                            yerr=_errors(y, y_low, y_high)[:, sel], fmt=marker, color=colour,
                            markersize=4, capsize=1.5, elinewidth=0.6, label=fam, zorder=3)
            front = pareto_front(part, "latency_median_ms", "accuracy_top1").to_numpy()
            order = np.argsort(x[front])
            # the staircase's corners, drawn as a plain line: the same segments are the ones
            # labels keep off
            step_x, step_y = cbook.pts_to_poststep(x[front][order], y[front][order])
            ax.plot(step_x, step_y, color="black", linewidth=0.8, linestyle="--", zorder=2)
            log = wide(x)
            if log:
                ax.set_xscale("log")
            ax.set_xlim(*_limits(x, x_low, x_high, log=log))
            # a Wilson interval stays within 0-100%: shown whole, however far it reaches
            ax.set_ylim(*_limits(y, y_low, y_high, log=False, reach=math.inf))
            if log:
                _log_ticks(ax)
            else:
                ax.locator_params(axis="x", nbins=5)
            colours = [style[f][0] for f in part["family"]]
            arrows = [_mark_clipped(ax, y, x_low, x_high, axis="x", colours=colours),
                      _mark_clipped(ax, x, y_low, y_high, axis="y", colours=colours)]
            ax_x, ax_y = (np.concatenate(a) for a in zip(*arrows, strict=True))
            clipped = clipped or bool(ax_x.size)
            measured_on = ", ".join(accuracy_sets(part))
            ax.set_title(_text(f"{device}: {measured_on}" if measured_on else device))
            ax.set_xlabel("Median latency [ms] (95% CI)")
            ax.set_ylabel("Top-1 accuracy [%] (95% CI)")
            # the front's points by latency, fastest first: the ones a reader looks for
            idx = np.flatnonzero(front)[order]
            labels = part["label"].to_numpy(str)
            # every point's error bars: a label across one reads as if it were cut; and the
            # front, which a label across reads as struck through as well
            whiskers = [(lo, yi, hi, yi) for lo, yi, hi in zip(x_low, y, x_high, strict=True)] \
                + [(xi, lo, xi, hi) for xi, lo, hi in zip(x, y_low, y_high, strict=True)] \
                + list(zip(step_x[:-1], step_y[:-1], step_x[1:], step_y[1:], strict=True))
            labelled.append((ax, x[idx], y[idx], list(labels[idx]),
                             np.concatenate([x[~front], ax_x]), np.concatenate([y[~front], ax_y]),
                             [w for w in whiskers if np.isfinite(w).all()]))
        front_key = Line2D([], [], color="black", linestyle="--", linewidth=0.8)
        _legend(fig, [*_handles(axes), (front_key, "Pareto front (labelled)"),
                      *([_clipped_key()] if clipped else [])], layout)
        _isa_title(fig, data, layout)
        _freeze(fig)
        for ax, fx, fy, names, ox, oy, whiskers in labelled:
            place_labels(ax, fx, fy, names, avoid_x=ox, avoid_y=oy, avoid_lines=whiskers,
                         fontsize=FONT_PT)
        return fig


# --- speedup by technique ----------------------------------------------------------------------


def speedup_figure(df: pd.DataFrame, layout: Layout = DOUBLE) -> Figure | None:
    """One row per compressed variant, grouped under its fp32 model, a bar from 1 to its speedup
    with the 95% interval (paired by session); one panel per device. A bar whose interval
    includes 1 (or that has none) is grey and hatched, as in the heatmap: a solid bar of 1.60
    [0.57, 4.50] read as a win the measurement does not show."""
    data = _ok(df)
    data = data[~data["is_baseline"] & data["speedup"].notna()]
    if data.empty:
        return None
    data = _labelled(data)
    devices = sorted(data["device"].unique())
    colours = _colours(sorted(data["family"].unique()))
    heights = [_rows_height(p) for _, p in data.groupby("device")]
    with paper_style():
        fig, axes = _figure(layout, len(devices), _panel_heights(heights, layout))
        clipped = unsure = False
        for ax, device in zip(axes, devices, strict=True):
            part, pos, headers = _rows(data[data["device"] == device])
            s = part["speedup"].to_numpy(float)
            low = part["speedup_ci95_low"].to_numpy(float)
            high = part["speedup_ci95_high"].to_numpy(float)
            log = wide(s)
            if log:
                ax.set_xscale("log")
            bars = ax.barh(pos, s - 1, left=1, height=0.7,
                           color=[colours[f][0] for f in part["family"]], edgecolor="black",
                           linewidth=0.4, xerr=_errors(s, low, high), capsize=1.5,
                           error_kw={"elinewidth": 0.6})
            with np.errstate(invalid="ignore"):
                conclusive = (low > 1) | (high < 1)
            for bar, sure in zip(bars.patches, conclusive, strict=True):
                if not sure:
                    bar.set_facecolor(INCONCLUSIVE_COLOUR)
                    bar.set_hatch("///")
                    unsure = True
            ax.axvline(1.0, color="black", linewidth=0.6)
            ax.set_xlim(*_limits(np.append(s, 1.0), low, high, log=log))
            if log:
                _log_ticks(ax)
            arrows, _ = _mark_clipped(ax, np.asarray(pos, float), low, high, axis="x")
            clipped = clipped or bool(arrows.size)
            _row_axis(ax, pos, list(part["label"]), headers)
            ax.set_title(_text(device))
            ax.set_xlabel("Speedup over fp32 [x] (95% CI)")
        keys = [_clipped_key()] if clipped else []
        if unsure:
            keys.append(_inconclusive_key(layout))
        if keys:
            _legend(fig, keys, layout)
        _isa_title(fig, data, layout)
        return fig


def _inconclusive_key(layout: Layout) -> tuple[Patch, str]:
    """The legend entry of a speedup whose interval includes 1, wrapped to the figure."""
    return (Patch(facecolor=INCONCLUSIVE_COLOUR, edgecolor="#B0B0B0", hatch="///", linewidth=0),
            _wrapped(INCONCLUSIVE_LABEL, layout))


def _wrapped(label: str, layout: Layout) -> str:
    """A legend label wrapped to the figure's width (DejaVu Sans at 8 pt sets about 16
    characters an inch, a key and its gap 0.5 in)."""
    return "\n".join(textwrap.wrap(label, int((layout.width_in - 0.6) * 15)))


def _panel_heights(heights: list[float], layout: Layout) -> list[float]:
    """One height per row of panels: the tallest of the panels side by side."""
    cols = max(1, min(layout.columns, len(heights)))
    return [max(heights[i : i + cols]) for i in range(0, len(heights), cols)]


# --- latency distributions ---------------------------------------------------------------------

# Where a row's headline and its session medians sit: under its box (rows are 1 apart, boxes
# 0.55 high).
HEADLINE_OFFSET = 0.42


def latency_distribution_figure(
    df: pd.DataFrame,
    layout: Layout = DOUBLE,
    samples: Callable[[str], np.ndarray] | None = None,
    medians: Callable[[str], pd.Series] | None = None,
) -> Figure | None:
    """Box plots of the raw samples of all sessions per device, each baseline followed by its
    variants; under each box the measurement's headline (the tables' Median) with its 95%
    interval, and each session's median as a diamond beside it when `medians` is given.

    Boxes span the quartiles, whiskers p1 to p99: latency has long tails (a page fault, a
    preemption) that would otherwise set the scale; p99 itself is in the tables. The box's line
    is the median of the pooled samples, which a session that ran many more iterations than the
    others sets: it lay 5x from the headline where a fast session ran 7x the iterations of four
    slow ones, and a variant looked slower than its baseline that the tables said was faster.
    So the figure's main mark is the headline, made of the session medians (the diamonds) as
    the tables' is; the box is the distribution of single iterations.
    """
    data = _ok(df)
    if data.empty or samples is None:
        return None
    data = _labelled(data)
    values = {j: samples(j) for j in data["job_id"]}
    data = data[[values[j].size > 1 for j in data["job_id"]]]
    if data.empty:
        return None
    devices = sorted(data["device"].unique())
    colours = _colours(sorted(data["family"].unique()))
    heights = [_rows_height(p) for _, p in data.groupby("device")]
    with paper_style():
        fig, axes = _figure(layout, len(devices), _panel_heights(heights, layout))
        clipped = False
        for ax, device in zip(axes, devices, strict=True):
            part, pos, headers = _rows(data[data["device"] == device])
            boxes = ax.boxplot([values[j] for j in part["job_id"]], positions=pos,
                               orientation="horizontal", whis=(1, 99), showfliers=False,
                               patch_artist=True, widths=0.55,
                               medianprops={"color": "black", "linewidth": 0.8},
                               whiskerprops={"linewidth": 0.6}, capprops={"linewidth": 0.6})
            for box, (_, row) in zip(boxes["boxes"], part.iterrows(), strict=True):
                box.set_facecolor(colours[row["family"]][0])
                box.set_edgecolor("black")
                box.set_linewidth(0.5)
                if not row["is_baseline"]:
                    box.set_alpha(0.55)
                    box.set_hatch("////")
            shown = [np.concatenate([np.percentile(values[j], [1, 99]) for j in part["job_id"]])]
            # marks as small as the rows' text where the rows were compacted to fit a page
            scale = row_font_pt(fig) / FONT_PT
            if medians is not None:
                for p, job in zip(pos, part["job_id"], strict=True):
                    dots = medians(job).to_numpy(float)
                    shown.append(dots)
                    # a white rim: they lie on the headline's black interval
                    ax.scatter(dots, np.full(dots.size, p + HEADLINE_OFFSET), s=9 * scale**2,
                               marker="D",
                               color="black", edgecolors="white", linewidths=0.4, zorder=6)
            headline = part["latency_median_ms"].to_numpy(float)
            low = part["latency_ci95_low_ms"].to_numpy(float)
            high = part["latency_ci95_high_ms"].to_numpy(float)
            shown.append(headline)
            everything = np.concatenate(shown)
            log = wide(everything)
            if log:
                ax.set_xscale("log")
            # the distribution is what this figure is for: an interval of two sessions (t
            # with one degree of freedom) runs off the edge before it squeezes the boxes
            ax.set_xlim(*_limits(everything, low, high, log=log, pad=0.04, reach=0.1))
            if log:
                _log_ticks(ax)
            # on the diamonds' line, the session medians it is made of; off the whiskers
            at = np.asarray(pos, float) + HEADLINE_OFFSET
            ax.errorbar(headline, at, xerr=_errors(headline, low, high), fmt="o",
                        markersize=4.5 * scale, markerfacecolor="white", markeredgecolor="black",
                        markeredgewidth=1.0 * scale, ecolor="black", elinewidth=1.4 * scale,
                        capsize=2.5 * scale, capthick=1.0 * scale, zorder=5)
            arrows, _ = _mark_clipped(ax, at, low, high, axis="x")
            clipped = clipped or bool(arrows.size)
            _row_axis(ax, pos, list(part["label"]), headers)
            ax.set_title(_text(device))
            ax.set_xlabel("Latency [ms]" + (" (log scale)" if log else ""))
        key: list[tuple[Any, str]] = [
            (Line2D([], [], color="black", marker="o", markersize=4.5, markerfacecolor="white",
                    markeredgewidth=1.0, linewidth=1.4), "Median, as in the tables (95% CI)"),
            (Patch(facecolor="#bbbbbb", edgecolor="black", linewidth=0.5), "fp32 baseline"),
            (Patch(facecolor="#bbbbbb", edgecolor="black", linewidth=0.5, hatch="////",
                   alpha=0.55), "compressed variant"),
            (Line2D([], [], color="black", linewidth=0.8), "median of all samples pooled"),
        ]
        if medians is not None:
            key.append((Line2D([], [], color="black", marker="D", markersize=3, linestyle="",
                               markeredgecolor="white", markeredgewidth=0.4), "session medians"))
        if clipped:
            key.append(_clipped_key())
        _legend(fig, key, layout, title="box: quartiles of all samples, whiskers p1 to p99")
        _isa_title(fig, data, layout)
        return fig


# --- model size ---------------------------------------------------------------------------------


def _amount(value: float) -> str:
    """A figure beside a bar, to three significant digits, trailing zeros kept: "0.0700" beside
    "0.0553", not "0.07", which reads as a rougher figure."""
    return f"{value:#.3g}".rstrip(".") if value < 100 else f"{value:.0f}"


def _bar_floor(values: np.ndarray, log: bool) -> float:
    """Where bars start: 0 on a linear axis, a power of ten below the smallest on a log one."""
    if not log:
        return 0.0
    return float(10 ** math.floor(math.log10(float(np.nanmin(values[values > 0])))))


def model_size_figure(df: pd.DataFrame, layout: Layout = DOUBLE) -> Figure | None:
    """File size of each artifact, grouped under its fp32 model, the number at each bar's end;
    a log axis when the sizes span more than a decade (a 40 KB digits model beside a 46 MB
    ResNet18)."""
    sizes = df.drop_duplicates(["model", "format"])
    sizes = sizes[sizes["size_bytes"].notna()]
    if sizes.empty:
        return None
    sizes = _labelled(sizes, "format")
    part, pos, headers = _rows(sizes)
    mb = part["size_bytes"].to_numpy(float) / 1e6
    with paper_style():
        fig, (ax,) = _figure(layout, 1, _rows_height(sizes))
        log = wide(mb)
        if log:
            ax.set_xscale("log")
        floor = _bar_floor(mb, log)
        is_base = part["is_baseline"].to_numpy(bool)
        bars = ax.barh(pos, mb - floor, left=floor, height=0.7,
                       color=[BASELINE_COLOUR if b else OKABE_ITO[0] for b in is_base],
                       edgecolor="black", linewidth=0.4)
        for bar, base, value in zip(bars, is_base, mb, strict=True):
            if not base:
                bar.set_hatch("////")
            ax.annotate(_amount(value), (value, bar.get_y() + bar.get_height() / 2),
                        xytext=(2, 0), textcoords="offset points", va="center", ha="left",
                        fontsize=row_font_pt(fig))
        # room for the numbers at the bars' ends
        ax.set_xlim(floor if log else 0, float(mb.max()) * (6 if log else 1.25))
        if log:
            _log_ticks(ax)
        _row_axis(ax, pos, list(part["label"]), headers)
        ax.set_xlabel("Model file size [MB]" + (" (log scale)" if log else ""))
        # a key only for what is drawn: "compressed variant" beside fp32 bars alone named a
        # bar that is not there
        keys = [(Patch(facecolor=BASELINE_COLOUR, edgecolor="black"), "fp32 baseline"),
                (Patch(facecolor=OKABE_ITO[0], edgecolor="black", hatch="////"),
                 "compressed variant")]
        _legend(fig, [k for k, drawn in zip(keys, (is_base.any(), (~is_base).any()),
                                            strict=True) if drawn], layout)
        return fig


# --- memory -------------------------------------------------------------------------------------


PROCESS_PEAK_LABEL = "process peak, loading included: the number"
SESSION_RANGE_LABEL = "whisker: lowest to highest session"


def _memory_number(part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The number a memory row writes, the median over its sessions: the process peak (the
    tables' Peak RSS), or the timed window's where the process peak was not recorded; and the
    lowest and highest of its sessions (`frame.with_memory_ranges`), NaN where there is no
    range to draw: one session, sessions that agree, or a frame without the ranges."""
    process = part["peak_rss_mb"].to_numpy(float)
    timed = part["timed_peak_rss_mb"].to_numpy(float)
    has_process = np.isfinite(process)

    def bound(end: str) -> np.ndarray:
        column = [f"{stem}_{end}_mb" for stem in ("peak_rss", "timed_peak_rss")]
        if not all(c in part for c in column):
            return np.full(len(part), np.nan)
        return np.where(has_process, part[column[0]].to_numpy(float),
                        part[column[1]].to_numpy(float))

    low, high = bound("min"), bound("max")
    with np.errstate(invalid="ignore"):
        none = ~(high > low)
    low[none] = np.nan
    high[none] = np.nan
    return np.where(has_process, process, timed), low, high


def memory_has_whiskers(df: pd.DataFrame) -> bool:
    """Whether `memory_figure(df)` draws a whisker (a range over sessions) on any row: what
    the caption may say of them."""
    data = _ok(df)
    data = data[data["timed_peak_rss_mb"].notna() | data["peak_rss_mb"].notna()]
    return bool(np.isfinite(_memory_number(data)[1]).any())


def memory_figure(df: pd.DataFrame, layout: Layout = DOUBLE) -> Figure | None:
    """Peak resident memory of the timed window per job, split into the runtime's own (the
    process after importing the runtime and loading the data, before the model) and what the
    model adds; a tick marks the whole process's peak, loading included, and its figure (the
    tables' Peak RSS) is written beside it. Each is the median over the measurement's sessions;
    a whisker spans the lowest to the highest session of the number written, as every latency
    figure shows its spread: a range, since three to five fresh processes give a t interval
    wider than anything they showed (`frame.with_memory_ranges`)."""
    data = _ok(df)
    data = data[data["timed_peak_rss_mb"].notna() | data["peak_rss_mb"].notna()]
    if data.empty:
        return None
    data = _labelled(data)
    devices = sorted(data["device"].unique())
    heights = [_rows_height(p) for _, p in data.groupby("device")]
    with paper_style():
        fig, axes = _figure(layout, len(devices), _panel_heights(heights, layout))
        for ax, device in zip(axes, devices, strict=True):
            part, pos, headers = _rows(data[data["device"] == device])
            runtime = part["rss_runtime_mb"].to_numpy(float)
            peak = part["timed_peak_rss_mb"].to_numpy(float)
            peak = np.where(np.isfinite(peak), peak, part["peak_rss_mb"].to_numpy(float))
            split = np.isfinite(runtime)
            base = np.where(split, runtime, 0.0)
            model = np.clip(np.where(split, peak - base, peak), 0, None)
            ax.barh(pos, base, height=0.7, color=RUNTIME_COLOUR, edgecolor="black",
                    linewidth=0.4, label="runtime, before the model is loaded")
            ax.barh(pos, model, left=base, height=0.7, color=OKABE_ITO[0], edgecolor="black",
                    linewidth=0.4, hatch="////", label="added by the model (timed window)")
            process = part["peak_rss_mb"].to_numpy(float)
            ax.scatter(process, pos, marker="|", s=60, color="black", linewidths=1.2, zorder=4,
                       label=PROCESS_PEAK_LABEL)
            # The number is the tick's, the tables' Peak RSS, written beside it; the bar's own
            # end was written there, 194 beside a tick at 204. Without a tick, the bar's end.
            number, low, high = _memory_number(part)
            ranged = np.isfinite(low)
            if ranged.any():
                at = np.asarray(pos, float)[ranged]
                ax.errorbar(number[ranged], at, xerr=np.clip(np.vstack(
                    [number[ranged] - low[ranged], high[ranged] - number[ranged]]), 0, None),
                    fmt="none", ecolor="black", elinewidth=0.8, capsize=2.5, capthick=0.8,
                    zorder=4, label=SESSION_RANGE_LABEL)
            top = float(np.nanmax(np.fmax(np.fmax(peak, process), high)))
            for p, value, bar_end, reach in zip(pos, number, peak, high, strict=True):
                # right of the whisker: a figure written over its cap read as two numbers
                ax.annotate(_amount(value), (np.nanmax([value, bar_end, reach]), p),
                            xytext=(4, 0), textcoords="offset points", va="center", ha="left",
                            fontsize=row_font_pt(fig))
            ax.set_xlim(0, top * 1.22)
            _row_axis(ax, pos, list(part["label"]), headers)
            ax.set_title(_text(device))
            ax.set_xlabel("Peak resident memory [MiB]")
        order = ["runtime", "added", "process", "whisker"]
        entries = sorted(_handles(axes), key=lambda e: [e[1].startswith(w) for w in order]
                         .index(True))
        _legend(fig, entries, layout)
        _isa_title(fig, data, layout)
        return fig


# --- speedup heatmap ---------------------------------------------------------------------------


INCONCLUSIVE_COLOUR = "#E6E6E6"
INCONCLUSIVE_LABEL = "grey, hatched: 95% CI includes 1 (or none), not shown faster or slower"
# What a heatmap cell of a variant measured without a speedup says, by why: its status, or
# that its model's fp32 baseline has no ok measurement there to divide by.
NO_SPEEDUP_WORDS = {"unsupported": "unsupported", "failed": "failed", "ok": "no baseline"}
# ...and in a cell too narrow for those (7 characters: three devices in a single column)
NO_SPEEDUP_SHORT = {"unsupported": "unsup.", "failed": "failed", "no baseline": "no base"}
NO_SPEEDUP_LABEL = "a word: measured, no speedup (unsupported, failed, or no ok fp32 baseline)"


def heatmap_has_words(df: pd.DataFrame) -> bool:
    """Whether `speedup_heatmap_figure(df)` writes a word in a cell (`NO_SPEEDUP_WORDS`)."""
    speedups = df.loc[~df["is_baseline"], "speedup"]
    return bool(speedups.notna().any() and speedups.isna().any())


def speedup_heatmap_figure(df: pd.DataFrame, layout: Layout = DOUBLE) -> Figure | None:
    """Devices (and runtimes) x compressed models, coloured by speedup (1 = as fast as fp32),
    each cell's figure written in it, so that it reads without colour. Colour is kept for the
    cells whose 95% interval excludes 1: a point speedup of 2.2 with an interval of [0.07, 65]
    coloured as strongly as a sure one would say what the measurement does not, so such cells
    (and those without an interval) are grey and hatched, their figure still written. A variant
    measured without a speedup (unsupported, failed, or its baseline not ok) says so in its
    cell, `NO_SPEEDUP_WORDS`: it was left blank, and a device on which nothing ran was left
    out, as if it had not been measured."""
    variants = df[~df["is_baseline"]]
    if not variants["speedup"].notna().any():
        return None
    column = variants["device"].astype(str)
    if variants.groupby("device")["runtime"].nunique().max() > 1:
        column = column + "\n" + variants["runtime"].astype(str)
    variants = variants.assign(column=column)
    data = variants[(variants["status"] == "ok") & variants["speedup"].notna()]
    grids = {key: variants.pivot_table(index="model", columns="column", values=key,
                                       aggfunc="first", dropna=False)
             for key in ("speedup", "speedup_ci95_low", "speedup_ci95_high")}
    grid = grids["speedup"]
    words = variants.assign(word=variants["status"].map(NO_SPEEDUP_WORDS).where(
        variants["speedup"].isna())).pivot_table(
            index="model", columns="column", values="word", aggfunc="first", dropna=False)
    words = words.reindex(index=grid.index, columns=grid.columns)
    values = grid.to_numpy(float)
    low = grids["speedup_ci95_low"].reindex_like(grid).to_numpy(float)
    high = grids["speedup_ci95_high"].reindex_like(grid).to_numpy(float)
    with np.errstate(invalid="ignore"):
        conclusive = (low > 1) | (high < 1)
    shown = np.isfinite(values) & (values > 0)
    with paper_style():
        fig, (ax,) = _figure(layout, 1, 0.6 + 0.2 * grid.shape[0])
        sure = values[shown & conclusive]
        finite = sure if sure.size else values[shown]
        # Symmetric on a log scale: 2x faster and 2x slower get equally strong colours.
        reach = float(max(finite.max(), 1 / finite.min(), 1.1)) if finite.size else 2.0
        norm = LogNorm(vmin=1 / reach, vmax=reach)
        image = ax.imshow(np.where(conclusive, values, np.nan), cmap="PuOr_r", norm=norm,
                          aspect="auto")
        # A cell's width: the figure's less the row labels and the colour bar (0.9 in beside
        # the cells). Where a figure ("0.72") would not fit between its neighbours, the bar
        # goes below the cells and gives them its width: in a single column, four columns of
        # figures beside it ran into each other. DejaVu Sans sets a character in about 0.6 em.
        labels_in = max((_text_width_pt(_text(m)) for m in grid.index), default=0.0) / 72 + 0.15
        number_in = (_text_width_pt("0.00") + FONT_PT) / 72  # and half an em either side
        below = (layout.width_in - labels_in - 0.9) / grid.shape[1] < number_in
        cell_in = (layout.width_in - labels_in - (0.1 if below else 0.9)) / grid.shape[1]
        fits = cell_in * 72 / (0.6 * FONT_PT)
        for (i, j), v in np.ndenumerate(values):
            if not np.isfinite(v):
                word = words.iat[i, j]
                if isinstance(word, str):
                    word = word if len(word) <= fits else NO_SPEEDUP_SHORT[word]
                    ax.text(j, i, word, ha="center", va="center", fontsize=FONT_PT,
                            style="italic", color="#555555", zorder=2)
                continue
            if conclusive[i, j]:
                dark = abs(norm(v) - 0.5) > 0.3
            else:
                dark = False
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=INCONCLUSIVE_COLOUR,
                                       edgecolor="#B0B0B0", hatch="///", linewidth=0,
                                       zorder=1))
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=FONT_PT, zorder=2,
                    color="white" if dark else "black",
                    bbox=None if conclusive[i, j] else {"facecolor": INCONCLUSIVE_COLOUR,
                                                         "edgecolor": "none", "pad": 1.0})
        ax.set_xticks(np.arange(grid.shape[1]), [_text(c) for c in grid.columns])
        ax.set_yticks(np.arange(grid.shape[0]), [_text(m) for m in grid.index])
        ax.tick_params(length=0)
        ax.grid(False)
        ax.spines[:].set_visible(False)
        bar = fig.colorbar(image, ax=ax, label="Speedup [x] (log)", shrink=0.9, aspect=30,
                           location="bottom" if below else "right")
        # within a factor of 2 the doubling ticks would leave 1 alone on the bar
        steps = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0) if reach >= 2 else (2 / 3, 0.8, 1.0, 1.25, 1.5)
        ticks = [t for t in steps if 1 / reach <= t <= reach]
        bar.set_ticks(ticks, labels=[f"{t:.3g}" for t in ticks])
        bar.minorticks_off()
        keys = [_inconclusive_key(layout)] if (shown & ~conclusive).any() else []
        if heatmap_has_words(df):
            keys.append((Patch(facecolor="white", edgecolor="#B0B0B0", linewidth=0.4),
                         _wrapped(NO_SPEEDUP_LABEL, layout)))
        if keys:
            _legend(fig, keys, layout)
        _isa_title(fig, data, layout)
        _column_labels(fig, ax, [_text(c) for c in grid.columns], layout)
        return fig


def _column_labels(fig: Figure, ax: Axes, labels: list[str], layout: Layout) -> None:
    """The heatmap's column labels, upright where each fits its cell, else turned on end (on
    one line where the cells are too narrow even for their lines side by side): set upright
    in a single column, "local / onnxruntime" ran into "local / tflite" beside it. The cell's
    width is known once the figure is laid out (the row labels and colour bar take their
    share)."""
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
    pitch_pt = ax.get_window_extent().width * 72 / fig.dpi / max(len(labels), 1)
    gap_pt = FONT_PT / 2  # what keeps neighbours apart: half an em
    if max(map(_text_width_pt, labels), default=0.0) + gap_pt <= pitch_pt:
        return
    lines = max(label.count("\n") + 1 for label in labels)
    line_pt = 1.2 * FONT_PT  # matplotlib's line spacing
    upright_pt = lines * line_pt
    if upright_pt + gap_pt > pitch_pt:
        labels = [label.replace("\n", " ") for label in labels]
    ax.set_xticks(np.arange(len(labels)), labels, rotation=90, ha="center", va="top",
                  multialignment="center")
    # the labels now stand as tall as they were wide: the figure grows, not the cells shrink
    _grow(fig, (max(map(_text_width_pt, labels)) - upright_pt) / 72, layout)


# --- trends across runs ------------------------------------------------------------------------


def _run_axis(data: pd.DataFrame, layout: Layout
              ) -> tuple[dict[str, int], list[int], list[str]]:
    """Runs evenly spaced in start order (nightlies are not evenly spaced in time, and a gap says
    nothing): each run's x position, and the ticks and their labels (start time, UTC), at most
    12 across a double column and 6 across a single one."""
    runs = in_run_order(data.drop_duplicates("run_id"))[["run_id", "run_started_at"]] \
        .reset_index(drop=True)
    every = max(1, math.ceil(len(runs) / (12 if layout.width_in > 5 else 6)))
    ticks = list(range(0, len(runs), every))
    started = [pd.Timestamp(runs["run_started_at"][i]) for i in ticks]
    labels = [t.strftime("%m-%d %H:%M") for t in started]
    if len(set(labels)) < len(labels):  # runs begun within a minute: to the second
        labels = [t.strftime("%m-%d %H:%M:%S") for t in started]
    return {r: i for i, r in enumerate(runs["run_id"])}, ticks, labels


# A trend with more series than the palette has colours shows the unchanged ones in grey.
TREND_COLOURED_MAX = len(OKABE_ITO)
TREND_GREY = "#BBBBBB"
# The order in which ratio ticks are kept where not all of them fit: the roundest first.
RATIO_TICK_PRIORITY = ((1.0,), (0.5, 2.0), (0.25, 4.0), (2 / 3, 1.5), (1 / 3, 3.0),
                       (0.8, 1.25), (0.9, 1.1), (0.95, 1.05), (0.98, 1.02), (0.99, 1.01))
RATIO_TICKS = tuple(sorted(t for level in RATIO_TICK_PRIORITY for t in level))


class _RatioLocator(Locator):
    """Ticks of a ratio axis (log) at round ratios inside its limits, the roundest first
    (`RATIO_TICK_PRIORITY`), each kept only where its label clears those already kept: with
    all of them, 0.9, 1 and 1.1 were written over each other on a panel spanning 0.5 to 2. The
    axis's height is known only when it is drawn, so the choice is made then."""

    def __call__(self) -> Sequence[float]:
        axis = self.axis
        assert isinstance(axis, Axis)
        low, high = sorted(axis.get_view_interval())
        if not (low > 0 and high > low):
            return [1.0]
        per_decade = axis.axes.bbox.height / math.log10(high / low)  # display units
        gap = 1.4 * FONT_PT * axis.axes.figure.dpi / 72  # a line of the labels' text, and some
        kept: list[float] = []
        for level in RATIO_TICK_PRIORITY:
            for tick in level:
                if low <= tick <= high and all(
                        abs(math.log10(tick / k)) * per_decade >= gap for k in kept):
                    kept.append(tick)
        return sorted(kept) or [1.0]

    def tick_values(self, vmin: float, vmax: float) -> Sequence[float]:
        return [t for t in RATIO_TICKS if vmin <= t <= vmax] or [1.0]


def _ratio_ticks(ax: Axes) -> None:
    """Ticks of a ratio axis (log) at round ratios inside the limits, written as ratios, as many
    as have room (`_RatioLocator`)."""
    ax.yaxis.set_major_locator(_RatioLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:.3g}"))
    ax.yaxis.set_minor_locator(NullLocator())


# A series whose file was rebuilt under the same name, its sha256 another than at its previous
# point, is drawn as one line per file, the new file's first point boxed: a step there is the
# file's as much as the board's, as `edgebench compare` and the nightly say of such a pair.
REBUILT_LABEL = "file rebuilt (sha256 differs)"  # from its point before: said in the caption
REBUILT_COLOUR = "black"
REBUILT_NAMED_MAX = 10  # measurements a caption names; more are counted


def _sha(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _with_rebuilds(data: pd.DataFrame) -> pd.DataFrame:
    """`data` (ok rows with `x` and `job`) with `rebuilt`: whether a row measured another file
    than its series' (device, job) previous point, the sha256 of both known and different. A
    row or its previous one without a sha256 (a store from before it was recorded) is not
    called rebuilt: nothing says it was, as `edgebench compare` says nothing of such a pair."""
    rebuilt = pd.Series(False, index=data.index)
    if "model_sha256" in data:
        for _, series in data.groupby(["device", "job"], sort=False):
            sha = series.sort_values("x", kind="stable")["model_sha256"].map(_sha)
            before = sha.shift()
            rebuilt[sha.index] = sha.notna() & before.notna() & (sha != before)
    return data.assign(rebuilt=rebuilt)


def _files(rebuilt: np.ndarray) -> list[slice]:
    """The points of one series (in run order) measured on one file each: a line is drawn
    through each, never across a rebuild."""
    starts = [0, *np.flatnonzero(rebuilt)]
    return [slice(a, b) for a, b in zip(starts, [*starts[1:], len(rebuilt)], strict=True)]


def _last_file_median(data: pd.DataFrame, column: str = "latency_median_ms") -> pd.Series:
    """Each row's reference in a trend (`data` of `_with_rebuilds`): the median `column` of its
    series' last file, the points from its last rebuild on (all of them where it never
    was). Over every point a rebuild's two files were mixed, and which of them read as 1 went by
    how many runs each had; so 1 is the file measured now, and the old file's points say how
    far the rebuild moved it."""
    ordered = data.sort_values("x", kind="stable")
    keys = [ordered["device"], ordered["job"]]
    file = ordered["rebuilt"].astype(int).groupby(keys).cumsum()
    last = file == file.groupby(keys).transform("max")
    value = ordered[column].where(last)
    return value.groupby(keys).transform("median").reindex(data.index)


def _mark_rebuilt(ax: Axes, x: np.ndarray, y: np.ndarray) -> None:
    """A square around each first point of a rebuilt file: drawn as the slower ring is, a
    shape around the point, in black (a caveat, not a verdict), wide enough to hold the ring."""
    ax.scatter(x, y, s=110, marker="s", facecolors="none", edgecolors=REBUILT_COLOUR,
               linewidths=1.0, zorder=5)


def _rebuilt_key() -> tuple[Any, str]:
    return (Line2D([], [], marker="s", linestyle="", markerfacecolor="none",
                   markeredgecolor=REBUILT_COLOUR, markersize=8, markeredgewidth=1.0),
            REBUILT_LABEL)


def rebuilt_note(history: pd.DataFrame) -> str:
    """What a trend's caption says of the rebuilt files its figures box (`_with_rebuilds`):
    where, and of which measurements, in the words of `edgebench compare`; "" where none is."""
    data = _ok(history)
    if data.empty or history["run_id"].nunique() < 2 or "model_sha256" not in data:
        return ""
    position = _run_axis(history, DOUBLE)[0]
    data = _with_rebuilds(data.assign(x=data["run_id"].map(position),
                                      job=_job_label(data["model"].astype(str), data)))
    data = data[data["rebuilt"]]
    if data.empty:
        return ""
    at: dict[str, list[str]] = {}  # "device: model (format, runtime)" as the nightly names it
    for row in in_run_order(data).to_dict("records"):
        name = f"{row['device']}: {row['model']} ({row.get('format')}, {row.get('runtime')})"
        at.setdefault(name, []).append(pd.Timestamp(row["run_started_at"]).strftime(
            "%m-%d %H:%M"))  # as the axis writes the run
    names = [f"{name} at {', '.join(runs)}" for name, runs in sorted(at.items())]
    more = len(names) - REBUILT_NAMED_MAX
    listed = "; ".join(names[:REBUILT_NAMED_MAX]) + (f"; and {more} more" if more > 0 else "")
    n = len(names)
    return (f"Boxed, the line broken there: {n} measurement{'s' if n != 1 else ''} measured "
            "another file than in the run before under the same name (rebuilt between the "
            "runs, sha256 differs), so that a step there is the new file's, not the board's "
            f"alone: {listed}.")


def _last_run_changes(data: pd.DataFrame, history: pd.DataFrame, last: str) -> dict[
        tuple[str, str], str]:
    """(device, job) -> what changed in the last run: slower or faster than the run before
    (the caller's verdict), or failed (measured, status not ok)."""
    changes = {(str(r.device), str(r.job)): str(r.verdict) for r in data.itertuples()
               if r.run_id == last and r.verdict in (stats.SLOWER, stats.FASTER)}
    failed = history[(history["run_id"] == last) & (history["status"] != "ok")]
    for device, job in zip(failed["device"], _job_label(failed["model"].astype(str), failed,
                                                          among=data), strict=True):
        changes[(str(device), str(job))] = "failed"  # str(): a missing runtime gives NaN
    return changes


def trends_figure(
    history: pd.DataFrame,
    layout: Layout = DOUBLE,
    verdicts: pd.Series | None = None,
    *,
    threshold: float = stats.THRESHOLD,
) -> Figure | None:
    """Latency of each job over runs, one panel per device, as its ratio to the job's own
    median over the runs shown, on one log axis for every panel: a job of 0.1 ms and one of
    50 ms share it, and a 20% change reads as such; it spans at least the band of `threshold`
    around 1, so that a change the verdict calls none never fills the panel. The runs where a
    job got slower than in its previous run (`verdicts`: a run's pairs judged together, as the
    gate judges a nightly's) are ringed. Where a job's file was rebuilt under the same name
    (its sha256 another than at its previous point) its line is broken and the new file's
    first point boxed (`_with_rebuilds`): a step there need not be the board's; and its median
    is its last file's (`_last_file_median`), so that 1 is the file measured now. A job
    measured in one run only is left out (None when that leaves nothing), unless it failed
    in the last run. Every run of `history` has its place on the x axis, the last one
    included where nothing in it ran ok (its failures are marked there).

    At farm scale (more jobs than the palette has colours) only the jobs that changed in the
    last run, slower or faster (`verdicts`) or failing, are drawn in colour with their 95%
    intervals and named in the legend; the others are thin grey lines. With fewer jobs every
    one is coloured and named. `history` holds rows of several runs with `run_started_at`;
    runs are evenly spaced on the x axis in start order (nightly runs are not evenly spaced in
    time, and a gap says nothing). `verdicts` (aligned with `history`) are the caller's
    judgement of each row against the same job's previous run, `compare.verdicts_over_runs`
    with `threshold`.
    """
    data = _ok(history)
    if data.empty or history["run_id"].nunique() < 2:
        return None
    # every run of `history` on the axis, the last one (the reported run, the nightly) even
    # where nothing in it ran ok: it was left off, and its failures marked on the run before
    position, ticks, tick_labels = _run_axis(history, layout)
    last = max(position, key=position.__getitem__)
    data = data.assign(
        x=data["run_id"].map(position),
        job=_job_label(data["model"].astype(str), data),
        verdict="" if verdicts is None else verdicts.reindex(data.index).fillna(""),
    )
    data = _with_rebuilds(data)
    reference = _last_file_median(data)
    data = data.assign(ratio=data["latency_median_ms"] / reference,
                       ratio_low=data["latency_ci95_low_ms"] / reference,
                       ratio_high=data["latency_ci95_high_ms"] / reference)
    changes = _last_run_changes(data, history, last)
    # a job measured in one run only has no trend: left out unless it failed in the last run
    runs = data.groupby(["device", "job"])["run_id"].transform("nunique")
    data = data[(runs >= 2).to_numpy() | [(str(d), str(j)) in changes for d, j in zip(
        data["device"], data["job"], strict=True)]]
    if data.empty:
        return None
    devices = sorted(data["device"].unique())
    jobs = sorted(data["job"].unique())
    every = len(jobs) <= TREND_COLOURED_MAX
    if every:  # few jobs: each its colour, the same on every panel
        style = _colours(jobs)
    else:
        style = {f"{d}\0{j}": c for (d, j), c in zip(
            sorted(changes), _colours([str(i) for i in range(len(changes))]).values(),
            strict=True)}
    coloured = data[[every or (str(d), str(j)) in changes
                     for d, j in zip(data["device"], data["job"], strict=True)]]
    # The axis spans the threshold the runs are judged by at least: fitted to two runs 2% apart
    # it spanned 0.99 to 1.01, and noise the verdict calls no change looked like a collapse.
    band = [1 / (1 + threshold), 1 + threshold]
    low, high = _limits(np.append(data["ratio"].to_numpy(float), band),
                        coloured["ratio_low"].to_numpy(float),
                        coloured["ratio_high"].to_numpy(float), log=True)
    with paper_style():
        fig, axes = _figure(dataclasses.replace(layout, columns=1), len(devices), 2.0)
        marked = clipped = boxed = False
        boxed_any = bool(data["rebuilt"].any())  # one label on every panel: they share the axis
        for ax, device in zip(axes, devices, strict=True):
            part = data[data["device"] == device]
            intervals = []  # (x, low, high, colour) of the series drawn with their intervals
            for job in sorted(part["job"].unique()):
                series = part[part["job"] == job].sort_values("x")
                x = series["x"].to_numpy()
                y = series["ratio"].to_numpy(float)
                rebuilt = series["rebuilt"].to_numpy(bool)
                change = changes.get((str(device), str(job)))
                if not every and change is None:
                    for file in _files(rebuilt):  # a file of one point: a dot, not nothing
                        ax.plot(x[file], y[file], color=TREND_GREY, linewidth=0.5, zorder=1,
                                marker="o" if len(x[file]) == 1 else "", markersize=1.5,
                                label="others: last run no change or inconclusive")
                else:
                    colour, marker = style[job if every else f"{device}\0{job}"]
                    label = _text(job if every and change is None else (
                        f"{job}, last run {change}" if every
                        else f"{device}: {job}, last run {change}"))
                    y_low = series["ratio_low"].to_numpy(float)
                    y_high = series["ratio_high"].to_numpy(float)
                    intervals.append((x, y_low, y_high, colour))
                    err = _errors(y, y_low, y_high)
                    for file in _files(rebuilt):
                        ax.errorbar(x[file], y[file], yerr=err[:, file], color=colour,
                                    marker=marker, markersize=3, linewidth=1.0, elinewidth=0.6,
                                    capsize=1.5, label=label, zorder=3)
                    if change == "failed":  # no figure in the last run: a cross at the top
                        ax.plot([position[last]], [0.97], marker="X", markersize=6,
                                color=colour, linestyle="", clip_on=False, zorder=4,
                                transform=ax.get_xaxis_transform())
                worse = (series["verdict"] == stats.SLOWER).to_numpy()
                if worse.any():
                    marked = True
                    ax.scatter(x[worse], y[worse], s=70, facecolors="none", edgecolors="#D55E00",
                               linewidths=1.4, zorder=5)
                if rebuilt.any():
                    boxed = True
                    _mark_rebuilt(ax, x[rebuilt], y[rebuilt])
            ax.set_yscale("log")
            ax.set_ylim(low, high)
            _ratio_ticks(ax)
            for x, y_low, y_high, colour in intervals:
                heads, _ = _mark_clipped(ax, x, y_low, y_high, axis="y", colours=colour)
                clipped = clipped or bool(heads.size)
            ax.axhline(1.0, color=BASELINE_COLOUR, linewidth=0.6, zorder=2)
            ax.set_xticks(ticks, tick_labels, rotation=30, ha="right")
            ax.tick_params(axis="x", labelbottom=ax is axes[-1])  # the runs are the same
            ax.set_xlim(-0.5, len(position) - 0.5)
            shown = set(part["job"].astype(str))
            changed = sum(d == str(device) and j in shown for d, j in changes)
            # what the panel shows changing: the speed (a top-1 change is the accuracy trend's)
            ax.set_title(_text(f"{device}: {changed} of {len(shown)} changed speed in the last "
                               "run" if layout.width_in > 5
                               else f"{device}: {changed} of {len(shown)} changed speed"))
            ax.set_ylabel("Latency / last file's median" if boxed_any
                          else "Latency / its median")
        axes[-1].set_xlabel("Run (start time, UTC)")
        entries = _handles(axes)
        if marked:
            ring = Line2D([], [], marker="o", linestyle="", markerfacecolor="none",
                          markeredgecolor="#D55E00", markersize=7, markeredgewidth=1.4)
            # the rule in full is in the caption; the legend keeps its columns narrow
            entries.append((ring, f"slower than its previous run beyond {threshold:.0%} "
                                  "(95% CI, with the run's others)"))
        if boxed:
            entries.append(_rebuilt_key())
        if clipped:
            entries.append((Line2D([], [], marker="^", color="black", linestyle="",
                                   markersize=4), CLIPPED_LABEL))
        _legend(fig, entries, layout)
        _isa_title(fig, data, layout)
        return fig


def _accuracy_changes(data: pd.DataFrame, history: pd.DataFrame, last: str) -> dict[
        tuple[str, str], str]:
    """(device, job) -> how its top-1 changed in the last run against its previous run, in
    points, where the caller's verdict (`top1_verdict`) says it is lower or higher, or
    "failed"."""
    changes = {}
    changed = data[(data["run_id"] == last)
                   & data["top1_verdict"].isin([stats.LOWER_TOP1, stats.HIGHER_TOP1])]
    for device, job, before, after in zip(changed["device"], changed["job"],
                                          changed["top1_before"], changed["accuracy_top1"],
                                          strict=True):
        changes[(str(device), str(job))] = f"{100 * (after - before):+.1f} points"
    failed = history[(history["run_id"] == last) & (history["status"] != "ok")]
    shown = set(zip(data["device"].astype(str), data["job"], strict=True))
    for device, job in zip(failed["device"], _job_label(failed["model"].astype(str), failed,
                                                          among=data), strict=True):
        if (str(device), str(job)) in shown:
            changes[(str(device), str(job))] = "failed"
    return changes


def accuracy_trends_figure(history: pd.DataFrame, layout: Layout = DOUBLE,
                           accuracy: pd.DataFrame | None = None) -> Figure | None:
    """Top-1 accuracy of each job over runs, per device, with its Wilson 95% interval: a board
    whose deployed model starts to disagree with the host shows here. Runs are spaced as in
    `trends_figure`; None with fewer than two runs that measured accuracy.

    At farm scale (more jobs than the palette has colours) models of every accuracy would share
    one axis, so each job is drawn as its change from its own median over the runs shown (its
    last file's where it was rebuilt, `_last_file_median`), in points: the jobs whose top-1
    changed in the last run or that failed in it are in colour and named, the others thin grey
    lines at zero. A change is the caller's verdict, `accuracy`
    (aligned with `history`: `accuracy_verdict` and `top1_before`, `compare.accuracy_over_runs`:
    the gate's rule, the same images, one image or more and beyond its threshold); without it
    only the failures are coloured. The same images go through
    each run, so a change is exact and drawn without an interval (Wilson's interval is about
    other images, and would hide a change of a few images that every run repeats). A rebuilt
    file is boxed and its line broken, as in `trends_figure`."""
    data = _ok(history)
    data = data[data["accuracy_top1"].notna()]
    if data.empty or data["run_id"].nunique() < 2:
        return None
    position, ticks, tick_labels = _run_axis(data, layout)
    last = max(position, key=position.__getitem__)
    data = data.assign(x=data["run_id"].map(position),
                       job=_job_label(data["model"].astype(str), data),
                       top1_verdict="" if accuracy is None
                       else accuracy["accuracy_verdict"].reindex(data.index).fillna(""),
                       top1_before=math.nan if accuracy is None
                       else accuracy["top1_before"].reindex(data.index))
    data = _with_rebuilds(data)
    devices = sorted(data["device"].unique())
    jobs = sorted(data["job"].unique())
    every = len(jobs) <= TREND_COLOURED_MAX
    changes = {} if every else _accuracy_changes(data, history, last)
    if every:
        style = _colours(jobs)
        centre = pd.Series(0.0, data.index)
    else:
        style = {f"{d}\0{j}": c for (d, j), c in zip(
            sorted(changes), _colours([str(i) for i in range(len(changes))]).values(),
            strict=True)}
        centre = _last_file_median(data, "accuracy_top1")  # as the latency trend's
        change_pt = 100 * (data["accuracy_top1"] - centre).to_numpy(float)
        reach = max(0.5, float(np.abs(change_pt).max()))  # a flat line reads as flat
        limits = _limits(np.array([-reach, reach]), log=False)
    with paper_style():
        fig, axes = _figure(dataclasses.replace(layout, columns=1), len(devices), 2.2)
        boxed = False
        for ax, device in zip(axes, devices, strict=True):
            part = data[data["device"] == device]
            for job in sorted(part["job"].unique()):
                series = part[part["job"] == job].sort_values("x")
                x = series["x"].to_numpy()
                shift = centre[series.index].to_numpy(float)
                y = 100 * (series["accuracy_top1"].to_numpy(float) - shift)
                rebuilt = series["rebuilt"].to_numpy(bool)
                if rebuilt.any():
                    boxed = True
                    _mark_rebuilt(ax, x[rebuilt], y[rebuilt])
                change = changes.get((str(device), str(job)))
                if not every and change is None:
                    for file in _files(rebuilt):  # a file of one point: a dot, not nothing
                        ax.plot(x[file], y[file], color=TREND_GREY, linewidth=0.5, zorder=1,
                                marker="o" if len(x[file]) == 1 else "", markersize=1.5,
                                label="others: same top-1 as the run before")
                    continue
                colour, marker = style[job if every else f"{device}\0{job}"]
                err = _errors(y, 100 * series["accuracy_top1_low"].to_numpy(float),
                              100 * series["accuracy_top1_high"].to_numpy(float)) if every else None
                label = job if every else f"{device}: {job}, last run {change}"
                for file in _files(rebuilt):
                    ax.errorbar(x[file], y[file], yerr=None if err is None else err[:, file],
                                color=colour, marker=marker, markersize=3, linewidth=0.8,
                                elinewidth=0.6, capsize=1.5, label=_text(label), zorder=3)
                if change == "failed":  # no figure in the last run: a cross at the top
                    ax.plot([position[last]], [0.97], marker="X", markersize=6, color=colour,
                            linestyle="", clip_on=False, zorder=4,
                            transform=ax.get_xaxis_transform())
            ax.set_xticks(ticks, tick_labels, rotation=30, ha="right")
            ax.tick_params(axis="x", labelbottom=ax is axes[-1])  # the runs are the same
            ax.set_xlim(-0.5, len(position) - 0.5)
            if every:
                ax.set_title(_text(device))
                ax.set_ylabel("Top-1 accuracy [%] (95% CI)")
            else:
                shown = set(part["job"].astype(str))
                changed = sum(d == str(device) and j in shown for d, j in changes)
                ax.set_title(_text(f"{device}: {changed} of {len(shown)} changed top-1 in the "
                                   "last run"))
                ax.axhline(0.0, color=BASELINE_COLOUR, linewidth=0.6, zorder=0)
                ax.set_ylim(*limits)
                ax.set_ylabel("Top-1 minus last file's median [points]"
                              if data["rebuilt"].any() else "Top-1 minus its median [points]")
        axes[-1].set_xlabel("Run (start time, UTC)")
        _legend(fig, [*_handles(axes), *([_rebuilt_key()] if boxed else [])], layout)
        _isa_title(fig, data, layout)
        return fig


# --- building and saving in one call -------------------------------------------------------------

FIGURE_NAMES = (
    "accuracy_latency",
    "speedup_by_technique",
    "latency_distributions",
    "model_size",
    "memory",
    "speedup_heatmap",
    "trends",
)
# Figures of the model files themselves, not of anything timed on a device: their captions
# leave out the sessions, protocol and devices the others are measured with ("5 sessions
# (fresh processes, interleaved) per measurement" under a file's size), as their figures leave
# out the devices' instruction sets.
FILE_FIGURES = frozenset({"model_size"})
PLOT_TITLES = {
    "accuracy_latency": "Top-1 accuracy against median latency (the geometric mean of the "
    "session medians, 95% CI), Pareto front dashed and labelled; an arrowhead on the frame: the "
    "interval runs on past the axis",
    "speedup_by_technique": "Speedup over the fp32 baseline by technique: the ratio of the "
    "geometric means of the session medians, baseline over variant, with its 95% interval (an "
    "arrowhead on the frame: it runs on past the axis)",
    "latency_distributions": "Latency distributions from the raw samples of all sessions (p1 to"
    " p99), session medians as diamonds, the tables' median with its 95% CI as a circle",
    "model_size": "Model file size",
    "memory": "Peak memory: the runtime's own and what the model holds while it runs (what "
    "its load freed handed back first); the number is the process peak, loading included (the "
    "tick), the tables' Peak RSS",
    "speedup_heatmap": "Speedup per device and model: the ratio of the geometric means of the "
    "session medians, baseline over variant; grey and hatched where its 95% interval includes 1 "
    "(or there is none), so that it is not shown faster or slower; a word in italics where the "
    "variant was measured without a speedup (unsupported, failed, or no ok fp32 baseline there)",
    "trends": "Median latency (the geometric mean of the session medians) across runs relative "
    "to each measurement's own median over them, its last file's where the file was rebuilt "
    "(95% CI), slower than the previous run ringed (the rule of edgebench compare, each run's "
    "measurements judged together); at farm scale what changed in the last run in colour",
}


def report_figures(
    df: pd.DataFrame,
    history: pd.DataFrame | None = None,
    *,
    samples: Callable[[str], np.ndarray] | None = None,
    medians: Callable[[str], pd.Series] | None = None,
    verdicts: pd.Series | None = None,
    threshold: float = stats.THRESHOLD,
) -> dict[str, FigureBuilder]:
    """Every figure of a run's report, by name (`FIGURE_NAMES`), as a builder of a layout."""
    return {
        "accuracy_latency": lambda lay: accuracy_latency_figure(df, lay),
        "speedup_by_technique": lambda lay: speedup_figure(df, lay),
        "latency_distributions": lambda lay: latency_distribution_figure(df, lay, samples,
                                                                         medians),
        "model_size": lambda lay: model_size_figure(df, lay),
        "memory": lambda lay: memory_figure(df, lay),
        "speedup_heatmap": lambda lay: speedup_heatmap_figure(df, lay),
        "trends": lambda lay: None if history is None else trends_figure(
            history, lay, verdicts, threshold=threshold),
    }


FORK_HOSTILE = ("jax",)


def write_figures(builders: dict[str, FigureBuilder], folder: Path, layout: Layout = SCREEN,
                  formats: Sequence[str] = ("png",), suffix: str = "",
                  dpi: int = SCREEN_DPI, jobs: int | None = None) -> list[Path]:
    """Build each figure once for `layout` and write it in every format as
    `folder/<name><suffix>.<format>`; figures with nothing to show write nothing.

    Drawing and rasterising are most of a report's time and use one core, so with two cores or
    more (`jobs`, default: up to 2) a forked process draws every other figure while this one
    draws the rest; the files and their order are the same either way. Not in a process that
    has loaded a library that must not be forked (`FORK_HOSTILE`: JAX, which litert-torch loads
    when a build converts to TFLite, runs threads a forked child would deadlock on); the
    `edgebench report` command never loads them."""
    names = list(builders)
    jobs = min(len(names), jobs if jobs is not None else min(2, os.cpu_count() or 1))
    if (jobs < 2 or "fork" not in multiprocessing.get_all_start_methods()
            or any(module in sys.modules for module in FORK_HOSTILE)):
        done = _write_some(builders, names, folder, layout, formats, suffix, dpi)
    else:
        ctx = multiprocessing.get_context("fork")
        reader, writer = ctx.Pipe(duplex=False)
        theirs, mine = names[1::2], names[0::2]
        child = ctx.Process(target=_write_in_child, daemon=True, args=(
            writer, builders, theirs, folder, layout, formats, suffix, dpi))
        child.start()
        writer.close()
        try:
            done = _write_some(builders, mine, folder, layout, formats, suffix, dpi)
        finally:
            try:
                ok, payload = reader.recv()
            except EOFError:
                ok, payload = False, ("bug", f"the figure process ended with code "
                                             f"{child.exitcode}")
            child.join()
        if not ok:
            kind, *why = payload
            if kind == "os":  # a full disk, a folder gone: what the report says in one line
                raise OSError(*why)
            raise RuntimeError(f"drawing {', '.join(theirs)}: {why[0]}")
        done.update(payload)
    return [path for name in names for path in done.get(name, [])]


def _write_some(builders: dict[str, FigureBuilder], names: Sequence[str], folder: Path,
                layout: Layout, formats: Sequence[str], suffix: str, dpi: int
                ) -> dict[str, list[Path]]:
    done = {}
    for name in names:
        fig = builders[name](layout)
        if fig is not None:
            done[name] = save(fig, folder, f"{name}{suffix}", formats, dpi)
    return done


def _write_in_child(writer: Any, *args: Any) -> None:
    """`_write_some` in the figure process; what failed goes back to the parent, which raises
    it: an OSError as itself (errno, text, file), anything else as a bug, with where it was
    raised here (the parent's own traceback would point at the pipe)."""
    try:
        writer.send((True, _write_some(*args)))
    except OSError as err:
        writer.send((False, ("os", err.errno, err.strerror, err.filename)))
    except BaseException as err:
        where = traceback.format_exc().rstrip()
        writer.send((False, ("bug", f"{type(err).__name__}: {err}\n{where}")))
    finally:
        writer.close()


def for_print(fig: Figure, build: FigureBuilder) -> Figure:
    """`fig` where it fits a page (at most `MAX_HEIGHT_IN`), else the figure built again for
    the double column, its rows compacted to fit."""
    if fig.get_figheight() <= MAX_HEIGHT_IN + 1e-6:
        return fig
    return build(DOUBLE) or fig


def page_and_print(build: FigureBuilder) -> tuple[Figure | None, Figure | None]:
    """The figure for the HTML page (`SCREEN`: as tall as its rows need) and the one for print:
    the same figure where it fits a page."""
    page = build(SCREEN)
    return page, None if page is None else for_print(page, build)


def _one(name: str, build: FigureBuilder, folder: Path, formats: Sequence[str],
         layout: Layout) -> list[Path]:
    """`name` in each format: rasters from `layout`'s figure, a PDF never taller than a page."""
    fig = build(layout)
    if fig is None:
        return []
    raster = [f for f in formats if f != "pdf"]
    paths = save(fig, folder, name, raster) if raster else []
    if "pdf" in formats:
        paths += save(for_print(fig, build), folder, name, ("pdf",))
    return paths


# One figure's files, for a page (`SCREEN` by default) and, with "pdf" in `formats`, for print.


def trends(history: pd.DataFrame, folder: Path, verdicts: pd.Series | None = None, *,
           threshold: float = stats.THRESHOLD, layout: Layout = SCREEN,
           formats: Sequence[str] = ("png",)) -> list[Path]:
    return _one("trends", lambda lay: trends_figure(history, lay, verdicts, threshold=threshold),
                folder, formats, layout)


def accuracy_trends(history: pd.DataFrame, folder: Path, accuracy: pd.DataFrame | None = None,
                    *, layout: Layout = SCREEN, formats: Sequence[str] = ("png",)) -> list[Path]:
    return _one("accuracy", lambda lay: accuracy_trends_figure(history, lay, accuracy), folder,
                formats, layout)
