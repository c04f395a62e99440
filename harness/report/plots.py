"""The report's figures, in one paper-ready style, as PNG (HTML, dashboards) and PDF (papers).

Every figure is built on a bare `matplotlib.figure.Figure` (no pyplot state, no GUI backend) under
one style: the Okabe-Ito palette, which stays distinguishable with the common colour-vision
deficiencies, with marker shapes as a second cue; fonts that stay readable at a single column's
width; Type 42 fonts in the PDF so that journals accept it. Each function returns the files it
wrote, or an empty list when there is nothing to show: no empty figures. Plots only draw: every
figure and verdict they show comes computed from the frame or from the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.report import stats
from harness.report.frame import pareto_front, variant_label

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
STYLE: dict[str, Any] = {
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "figure.constrained_layout.use": True,
}
BASELINE_COLOUR = "#555555"


@contextmanager
def paper_style() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        yield


def _save(fig: Figure, folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    for path in paths:
        # A fixed creation date keeps the PDF byte-identical from one report to the next.
        metadata = {"CreationDate": None} if path.suffix == ".pdf" else {"Software": None}
        fig.savefig(path, metadata=metadata)
    return paths


def _grid(
    n: int, width: float = 3.4, height: float = 2.8, cols: int = 2
) -> tuple[Figure, list[Axes]]:
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def _with_runtime(names: pd.Series, df: pd.DataFrame) -> pd.Series:
    # The same model name is measured once per runtime (an ONNX and a TFLite artifact); say which
    # only when it is ambiguous.
    if df["runtime"].nunique(dropna=True) > 1:
        return names + " / " + df["runtime"].astype(str)
    return names


def _family(df: pd.DataFrame) -> pd.Series:
    """The fp32 model (and runtime) each row belongs to: itself for a baseline, else its
    baseline. Compute it on the whole frame, then select, so that labels agree across panels."""
    return _with_runtime(df["baseline"].where(df["baseline"].notna(), df["model"]).astype(str), df)


def _job_label(df: pd.DataFrame) -> pd.Series:
    return _with_runtime(df["model"].astype(str), df)


def _figure_legend(fig: Figure, axes: list[Axes], **kwargs: Any) -> None:
    """One legend for the figure with every label any panel uses, in first-seen order."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    extra = kwargs.pop("extra", [])
    for handle, label in extra:
        seen[label] = handle
    if seen:
        # As many columns as fit the figure's width (about 2.2 inches per entry).
        fits = max(1, int(fig.get_figwidth() / 2.2))
        kwargs.setdefault("ncols", min(len(seen), fits))
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", **kwargs)


def _label_offsets(x: np.ndarray, y: np.ndarray) -> list[tuple[int, int]]:
    """Annotation offsets (points) that put a label below its point when the previous point (by
    latency) sits close by, so that neighbouring labels do not print over each other."""
    offsets: list[tuple[int, int]] = [(4, 3)] * len(x)
    if len(x) < 2:
        return offsets
    xs, ys = np.log(np.maximum(x, 1e-12)), y
    span_x = max(np.ptp(xs), 1e-9)
    span_y = max(np.ptp(ys), 1e-9)
    order = np.argsort(xs)
    for prev, cur in zip(order[:-1], order[1:], strict=True):
        near = abs(xs[cur] - xs[prev]) < 0.08 * span_x and abs(ys[cur] - ys[prev]) < 0.08 * span_y
        if near and offsets[prev] == (4, 3):
            offsets[cur] = (4, -10)
    return offsets


def _colours(keys: list[str]) -> dict[str, tuple[str, str]]:
    return {
        k: (OKABE_ITO[i % len(OKABE_ITO)], MARKERS[i % len(MARKERS)]) for i, k in enumerate(keys)
    }


def _log_if_wide(ax: Axes, values: np.ndarray, axis: str) -> None:
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


# --- accuracy against latency ------------------------------------------------------------------


def _errors(centre: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Error bar lengths below and above; none where the interval is not known."""
    return np.vstack([np.nan_to_num(centre - low), np.nan_to_num(high - centre)])


def accuracy_latency(df: pd.DataFrame, folder: Path) -> list[Path]:
    """Top-1 accuracy against median latency per device, with the Pareto front drawn; error bars
    are the 95% intervals of both (sessions for latency, Wilson for accuracy)."""
    data = _ok(df)
    data = data[data["accuracy_top1"].notna() & data["latency_median_ms"].notna()]
    if data.empty:
        return []
    data = data.assign(family=_family(data))
    devices = sorted(data["device"].unique())
    families = sorted(data["family"].unique())
    style = _colours(families)
    with paper_style():
        fig, axes = _grid(len(devices), width=3.6, height=3.0)
        for ax, device in zip(axes, devices, strict=True):
            part = data[data["device"] == device]
            x = part["latency_median_ms"].to_numpy(float)
            y = part["accuracy_top1"].to_numpy(float) * 100
            xerr = _errors(
                x,
                part["latency_ci95_low_ms"].to_numpy(float),
                part["latency_ci95_high_ms"].to_numpy(float),
            )
            yerr = _errors(
                y,
                part["accuracy_top1_low"].to_numpy(float) * 100,
                part["accuracy_top1_high"].to_numpy(float) * 100,
            )
            for fam in families:
                sel = (part["family"] == fam).to_numpy()
                if not sel.any():
                    continue
                colour, marker = style[fam]
                ax.errorbar(
                    x[sel],
                    y[sel],
                    xerr=xerr[:, sel],
                    yerr=yerr[:, sel],
                    fmt=marker,
                    color=colour,
                    markersize=5,
                    capsize=2,
                    elinewidth=0.8,
                    label=fam,
                    zorder=3,
                )
            front = pareto_front(part, "latency_median_ms", "accuracy_top1").to_numpy()
            order = np.argsort(x[front])
            ax.step(
                x[front][order],
                y[front][order],
                where="post",
                color="black",
                linewidth=1.0,
                linestyle="--",
                zorder=2,
            )
            ax.scatter(
                x[front],
                y[front],
                s=90,
                facecolors="none",
                edgecolors="black",
                linewidths=1.0,
                zorder=4,
            )
            labels = part.apply(variant_label, axis=1).tolist()
            for (xi, yi), offset in zip(zip(x, y, strict=True), _label_offsets(x, y), strict=True):
                ax.annotate(
                    labels.pop(0), (xi, yi), textcoords="offset points", xytext=offset, fontsize=7
                )
            _log_if_wide(ax, x, "x")
            if ax.get_xscale() == "linear":
                ax.locator_params(axis="x", nbins=5)
            ax.set_title(f"Accuracy vs latency: {device}")
            ax.set_xlabel("Median latency [ms] (95% CI)")
            ax.set_ylabel("Top-1 accuracy [%] (95% CI)")
            ax.margins(x=0.15, y=0.12)
        front_key = Line2D(
            [],
            [],
            color="black",
            linestyle="--",
            linewidth=1.0,
            marker="o",
            markerfacecolor="none",
            markersize=8,
        )
        _figure_legend(fig, axes, extra=[(front_key, "Pareto front")])
        return _save(fig, folder, "accuracy_latency")


# --- speedup by technique ----------------------------------------------------------------------


def speedup_by_technique(df: pd.DataFrame, folder: Path) -> list[Path]:
    """Grouped bars per device: one group per fp32 model, one bar per technique, 95% CI bars."""
    data = _ok(df)
    data = data[~data["is_baseline"] & data["speedup"].notna()]
    if data.empty:
        return []
    data = data.assign(family=_family(data), label=data.apply(variant_label, axis=1))
    devices = sorted(data["device"].unique())
    techniques = sorted(data["label"].unique())
    colours = _colours(techniques)
    groups = data.groupby(["device", "family"]).size()
    with paper_style():
        width_in = max(3.6, 0.5 * groups.groupby(level=0).sum().max() + 1.4)
        fig, axes = _grid(len(devices), width=width_in, height=2.8)
        for ax, device in zip(axes, devices, strict=True):
            part = data[data["device"] == device]
            families = sorted(part["family"].unique())
            # Bars of a group sit together (no empty slots for techniques it lacks); colour says
            # which technique a bar is.
            width = 0.8 / int(part.groupby("family").size().max())
            for g, family in enumerate(families):
                rows = part[part["family"] == family]
                rows = rows.assign(order=rows["label"].map(techniques.index)).sort_values("order")
                s = rows["speedup"].to_numpy(float)
                err = _errors(
                    s,
                    rows["speedup_ci95_low"].to_numpy(float),
                    rows["speedup_ci95_high"].to_numpy(float),
                )
                pos = g - width * len(rows) / 2 + width * (np.arange(len(rows)) + 0.5)
                for k, technique in enumerate(rows["label"]):
                    ax.bar(
                        pos[k],
                        s[k],
                        width=width * 0.95,
                        yerr=err[:, k : k + 1],
                        capsize=2,
                        color=colours[technique][0],
                        label=technique,
                        error_kw={"elinewidth": 0.8},
                    )
            ax.axhline(1.0, color=BASELINE_COLOUR, linewidth=0.8, linestyle=":")
            ax.set_xticks(np.arange(len(families)), families, rotation=15, ha="right")
            ax.set_title(f"Speedup over fp32: {device}")
            ax.set_ylabel("Speedup [x] (95% CI)")
            ax.grid(axis="x", visible=False)
        _figure_legend(fig, axes, title="Technique")
        return _save(fig, folder, "speedup_by_technique")


# --- latency distributions ---------------------------------------------------------------------


def latency_distributions(
    df: pd.DataFrame,
    folder: Path,
    samples: Callable[[str], np.ndarray],
    medians: Callable[[str], pd.Series] | None = None,
) -> list[Path]:
    """Box plots of the raw samples of all sessions per device, each baseline followed by its
    variants, with each session's median as a dot beside its box when `medians` is given.

    Boxes span the quartiles, whiskers p1 to p99: latency has long tails (a page fault, a
    preemption) that would otherwise set the scale; p99 itself is in the tables. The dots show
    the spread between processes, which the pooled box hides and the headline interval is made of.
    """
    data = _ok(df)
    if data.empty:
        return []
    data = data.assign(family=_family(data), label=data.apply(variant_label, axis=1))
    devices = sorted(data["device"].unique())
    colours = _colours(sorted(data["family"].unique()))
    with paper_style():
        most = max(len(data[data["device"] == d]) for d in devices)
        fig, axes = _grid(len(devices), width=max(5.0, 0.6 * most + 1.5), height=3.2, cols=1)
        for ax, device in zip(axes, devices, strict=True):
            part = data[data["device"] == device].sort_values(
                ["family", "is_baseline", "label"], ascending=[True, False, True], kind="stable"
            )
            values = [samples(j) for j in part["job_id"]]
            keep = [i for i, v in enumerate(values) if v.size > 1]
            if not keep:
                ax.set_visible(False)
                continue
            pos = np.arange(1, len(keep) + 1)
            boxes = ax.boxplot(
                [values[i] for i in keep],
                positions=pos,
                whis=(1, 99),
                showfliers=False,
                patch_artist=True,
                widths=0.6,
                medianprops={"color": "black", "linewidth": 1.5},
            )
            for box, i in zip(boxes["boxes"], keep, strict=True):
                row = part.iloc[i]
                box.set_facecolor(colours[row["family"]][0])
                box.set_edgecolor("black")
                box.set_linewidth(0.6)
                box.set_alpha(1.0 if row["is_baseline"] else 0.55)
                if not row["is_baseline"]:
                    box.set_hatch("//")
            if medians is not None:
                for p, i in zip(pos, keep, strict=True):
                    dots = medians(part.iloc[i]["job_id"]).to_numpy(float)
                    # beside the box, spread sideways so that equal medians stay countable
                    ax.scatter(
                        p + 0.38 + np.linspace(-0.05, 0.05, dots.size),
                        dots,
                        s=9,
                        marker="D",
                        color="black",
                        linewidths=0,
                        zorder=4,
                    )
            labels = [
                f"{part.iloc[i]['family']}\n{part.iloc[i]['label']}"
                if part.iloc[i]["is_baseline"]
                else part.iloc[i]["label"]
                for i in keep
            ]
            ax.set_xticks(pos, labels, rotation=30, ha="right")
            shown = np.concatenate([np.percentile(values[i], [1, 99]) for i in keep])
            _log_if_wide(ax, shown, "y")
            ax.set_title(f"Latency distribution: {device}")
            ax.set_ylabel("Latency [ms]")
            ax.grid(axis="x", visible=False)
        if not any(ax.get_visible() for ax in axes):
            return []
        key = [
            Patch(facecolor="#bbbbbb", edgecolor="black", linewidth=0.6, label="fp32 baseline"),
            Patch(
                facecolor="#bbbbbb",
                edgecolor="black",
                linewidth=0.6,
                hatch="//",
                alpha=0.55,
                label="compressed variant",
            ),
            Line2D([], [], color="black", linewidth=1.5, label="median of all samples"),
        ]
        if medians is not None:
            key.append(
                Line2D(
                    [],
                    [],
                    color="black",
                    marker="D",
                    markersize=3,
                    linestyle="",
                    label="session medians",
                )
            )
        fig.legend(
            handles=key,
            loc="outside lower center",
            ncols=min(len(key), max(1, int(fig.get_figwidth() / 1.8))),
            title="box: quartiles of all sessions' samples, whiskers: p1 to p99",
        )
        return _save(fig, folder, "latency_distributions")


# --- size and memory ---------------------------------------------------------------------------


def size_memory(df: pd.DataFrame, folder: Path) -> list[Path]:
    """Model file size per artifact and peak resident memory per job and device."""
    sizes = df.drop_duplicates(["model", "format"])
    sizes = sizes[sizes["size_bytes"].notna()]
    memory = _ok(df)
    memory = memory[memory["peak_rss_mb"].notna()]
    if sizes.empty and memory.empty:
        return []
    with paper_style():
        fig, axes = _grid(2, width=3.6, height=max(2.4, 0.28 * max(len(sizes), 1) + 1.0))
        ax = axes[0]
        if sizes.empty:
            ax.set_visible(False)
        else:
            sizes = sizes.sort_values("size_bytes")
            labels = [f"{m} ({f})" for m, f in zip(sizes["model"], sizes["format"], strict=True)]
            is_base = sizes["baseline"].isna().tolist()
            bars = ax.barh(
                labels,
                sizes["size_bytes"].astype(float) / 1e6,
                color=[BASELINE_COLOUR if b else OKABE_ITO[0] for b in is_base],
                edgecolor="black",
                linewidth=0.4,
            )
            for bar, base in zip(bars, is_base, strict=True):
                if not base:
                    bar.set_hatch("//")
            ax.set_xlabel("Model size [MB]")
            ax.set_title("Model size (solid grey: fp32 baseline)")
            ax.grid(axis="y", visible=False)
        ax = axes[1]
        if memory.empty:
            ax.set_visible(False)
        else:
            wide = memory.assign(job=_job_label(memory)).pivot_table(
                index="job", columns="device", values="peak_rss_mb", aggfunc="max"
            )
            wide = wide.sort_values(list(wide.columns)[0])
            n = len(wide.columns)
            height = 0.8 / n
            for d, device in enumerate(wide.columns):
                ax.barh(
                    np.arange(len(wide)) - 0.4 + height * (d + 0.5),
                    wide[device],
                    height=height * 0.95,
                    label=str(device),
                    color=OKABE_ITO[(d + 1) % len(OKABE_ITO)],
                )
            ax.set_yticks(np.arange(len(wide)), list(wide.index))
            ax.set_xlabel("Peak resident memory [MiB]")
            ax.set_title("Peak memory (RSS) per job")
            ax.legend(title="Device", loc="upper left", bbox_to_anchor=(1.0, 1.0))
            ax.grid(axis="y", visible=False)
        return _save(fig, folder, "size_memory")


# --- speedup heatmap ---------------------------------------------------------------------------


def speedup_heatmap(df: pd.DataFrame, folder: Path) -> list[Path]:
    """Devices x compressed models, coloured by speedup (1 = as fast as fp32)."""
    data = _ok(df)
    data = data[~data["is_baseline"] & data["speedup"].notna()]
    if data.empty:
        return []
    column = data["device"].astype(str)
    if data.groupby("device")["runtime"].nunique().max() > 1:
        column = column + "\n" + data["runtime"].astype(str)
    grid = data.assign(column=column).pivot_table(
        index="model", columns="column", values="speedup", aggfunc="first"
    )
    values = grid.to_numpy(float)
    with paper_style():
        # At least as wide as its title and colour bar need, for a run of one device and model.
        fig = Figure(
            figsize=(max(4.4, 1.4 + 1.1 * grid.shape[1]), max(2.2, 1.2 + 0.38 * grid.shape[0]))
        )
        ax = fig.subplots()
        finite = values[np.isfinite(values) & (values > 0)]
        # Symmetric on a log scale: 2x faster and 2x slower get equally strong colours.
        reach = float(max(finite.max(), 1 / finite.min(), 1.1)) if finite.size else 2.0
        norm = LogNorm(vmin=1 / reach, vmax=reach)
        image = ax.imshow(values, cmap="PuOr_r", norm=norm, aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                dark = abs(norm(v) - 0.5) > 0.3
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
        ax.set_xticks(np.arange(grid.shape[1]), list(grid.columns))
        ax.set_yticks(np.arange(grid.shape[0]), list(grid.index))
        ax.grid(False)
        ax.spines[:].set_visible(False)
        ax.set_title("Speedup over fp32 per device")
        bar = fig.colorbar(image, ax=ax, label="Speedup [x] (log scale)", shrink=0.9)
        ticks = [
            t
            for t in (0.25, 0.5, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 8.0)
            if 1 / reach <= t <= reach
        ]
        bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
        bar.minorticks_off()
        return _save(fig, folder, "speedup_heatmap")


# --- trends across runs ------------------------------------------------------------------------


def trends(
    history: pd.DataFrame,
    folder: Path,
    verdicts: pd.Series | None = None,
    *,
    threshold: float = stats.THRESHOLD,
) -> list[Path]:
    """Median latency of each job over runs, per device, with its 95% interval; the runs where it
    got slower than in its previous run ringed.

    `history` holds rows of several runs with `run_started_at`. Runs are evenly spaced on the x
    axis in start order (nightly runs are not evenly spaced in time, and a gap says nothing).
    `verdicts` (aligned with `history`) are the caller's judgement of each row against the same
    job's previous run, `compare.verdicts_over_runs` with `threshold`; "slower" is ringed.
    """
    data = _ok(history)
    if data.empty or data["run_id"].nunique() < 2:
        return []
    runs = (
        data[["run_id", "run_started_at"]]
        .drop_duplicates("run_id")
        .sort_values(["run_started_at", "run_id"])
        .reset_index(drop=True)
    )
    position = {r: i for i, r in enumerate(runs["run_id"])}
    data = data.assign(
        x=data["run_id"].map(position),
        job=data["model"].astype(str) + " / " + data["runtime"].astype(str),
        verdict="" if verdicts is None else verdicts.reindex(data.index).fillna(""),
    )
    every = max(1, math.ceil(len(runs) / 12))
    ticks = list(range(0, len(runs), every))
    tick_labels = [pd.Timestamp(runs["run_started_at"][i]).strftime("%m-%d %H:%M") for i in ticks]
    devices = sorted(data["device"].unique())
    with paper_style():
        fig, axes = _grid(len(devices), width=7.0, height=2.8, cols=1)
        marked = False
        for ax, device in zip(axes, devices, strict=True):
            part = data[data["device"] == device]
            jobs = sorted(part["job"].unique())
            style = _colours(jobs)
            for job in jobs:
                series = part[part["job"] == job].sort_values("x")
                colour, marker = style[job]
                y = series["latency_median_ms"].to_numpy(float)
                err = np.vstack(
                    [
                        np.nan_to_num(y - series["latency_ci95_low_ms"].to_numpy(float)),
                        np.nan_to_num(series["latency_ci95_high_ms"].to_numpy(float) - y),
                    ]
                )
                x = series["x"].to_numpy()
                ax.errorbar(
                    x,
                    y,
                    yerr=err,
                    color=colour,
                    marker=marker,
                    markersize=4,
                    linewidth=1.0,
                    capsize=2,
                    label=job,
                )
                worse = (series["verdict"] == stats.SLOWER).to_numpy()
                if worse.any():
                    marked = True
                    ax.scatter(
                        x[worse],
                        y[worse],
                        s=110,
                        facecolors="none",
                        edgecolors="#D55E00",
                        linewidths=1.8,
                        zorder=5,
                    )
            _log_if_wide(ax, part["latency_median_ms"].to_numpy(float), "y")
            ax.set_xticks(ticks, tick_labels, rotation=30, ha="right")
            ax.set_xlim(-0.5, len(runs) - 0.5)
            ax.set_title(f"Median latency over runs: {device}")
            ax.set_ylabel("Median latency [ms]")
            ax.set_xlabel("Run (start time, UTC)")
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
        if marked:
            ring = Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markerfacecolor="none",
                markeredgecolor="#D55E00",
                markersize=9,
                markeredgewidth=1.8,
            )
            fig.legend(
                [ring],
                [
                    f"slower than its previous run (whole 95% CI of the ratio above "
                    f"1 + {threshold:g})"
                ],
                loc="outside lower center",
            )
        return _save(fig, folder, "trends")


PLOT_TITLES = {
    "accuracy_latency": "Accuracy against latency, Pareto front dashed",
    "speedup_by_technique": "Speedup over the fp32 baseline by technique",
    "latency_distributions": "Latency distributions from the raw samples of all sessions (p1 to"
    " p99), session medians as dots",
    "size_memory": "Model size and peak memory",
    "speedup_heatmap": "Speedup per device and model",
    "trends": "Median latency across runs (95% CI), slower than the previous run ringed",
}
