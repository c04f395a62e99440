"""`edgebench report --style paper`: the figures as PDFs for one and for two columns, and a LaTeX
snippet that includes them with captions written from the run, next to the booktabs tables.

The folder `paper/` of a report is meant to be copied into a paper's sources as it is:
`<figure>-single.pdf` (3.3 in wide, for `\\columnwidth`) and `<figure>-double.pdf` (7 in, for
`\\textwidth`), both with their fonts embedded as TrueType (Type 42, which journals accept and
which stay editable) and every text at 8-9 pt, so that a figure included at its own width matches
the text around it; `figures.tex` with one `figure` environment per figure (the double-column
`figure*` alternative beside it, commented out); and the run's tables as booktabs `.tex` files.
A caption says what was measured where: device, its CPU and instruction set, runtimes and their
versions, threads, sessions per measurement and the run, from the rows themselves; that of a
figure of the model files (`plots.FILE_FIGURES`) only the run. What the rows do not hold, the
caller says in a figure's note, as on the page (the trend's rebuilt files, `plots.rebuilt_note`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from harness.report import plots
from harness.report.frame import distinct
from harness.report.tables import (
    Table,
    accuracy_sets,
    latex_escape,
    latex_note,
    protocol_text,
    sessions_text,
    to_latex,
)

if TYPE_CHECKING:
    from harness.store import RunInfo

PAPER_DIR = "paper"
# What each figure shows and how to read it; the run's facts follow.
CAPTIONS = {
    "accuracy_latency": "Top-1 accuracy against median latency, the geometric mean of the "
    "session medians. Error bars: 95\\% intervals, a t interval on the logs of the session "
    "medians for latency and a Wilson interval for accuracy. Dashed: "
    "the Pareto front, whose points are labelled by technique; every point is in the tables. "
    "An arrowhead on the frame: the interval runs on past the axis.",
    "speedup_by_technique": "Speedup of each compressed variant over its fp32 baseline (same "
    "device, runtime and threads): the ratio of the geometric means of the two measurements' "
    "session medians, baseline over variant, with its 95\\% interval, paired session by "
    "session. An arrowhead on the frame: the interval runs on past the axis.",
    "latency_distributions": "Latency of every timed iteration of all sessions: boxes span the "
    "quartiles, whiskers p1 to p99, the line is the median of all samples, diamonds are the "
    "medians of single sessions (fresh processes), the circle is the median of the tables with "
    "its 95\\% interval. Hatched: compressed variants.",
    "model_size": "Size of each model file; hatched: compressed variants.",
    "memory": "Peak resident memory during the timed window: the runtime's own (the process "
    "after importing the runtime, before the model is loaded, grey) and what the model adds "
    "(hatched), with the memory its load freed handed back to the system first; the tick marks "
    "the process peak including loading, the number beside it (Peak RSS in the tables).",
    "speedup_heatmap": "Speedup over the fp32 baseline per model and device: the ratio of the "
    "geometric means of the session medians, baseline over variant (log colour scale; above 1 "
    "is faster). Grey, hatched cells: the 95\\% interval includes 1 or could not be computed, "
    "so the variant is not shown to be faster or slower; colour only where it excludes 1.",
    "trends": "Median latency (the geometric mean of the session medians) of each measurement "
    "across runs, relative to its own median over these runs, its last file's where the file "
    "was rebuilt (log scale), with its 95\\% interval; with more measurements than colours, "
    "those that changed in the last run are coloured and the rest grey. Rings mark a run slower "
    "than its previous one: the whole 95\\% interval of the ratio of their session medians "
    "lies above 1 + T, the threshold of \\texttt{edgebench compare} (5\\% by default), and "
    "Holm's rule over the run's measurements agrees, as when \\texttt{edgebench compare} "
    "judges two runs.",
}


def _join(values: Sequence[str]) -> str:
    values = list(values)
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _cpus(part: pd.DataFrame) -> list[str]:
    """The CPUs a device's figures were measured on, as its fingerprints name them, with their
    count: "Intel Xeon Platinum 8481C CPU @ 2.70GHz, 2 CPUs" (a paper's reader wants the part,
    not the name the device has in this lab)."""
    cpus = set()
    for fingerprint in part.get("device_fingerprint", pd.Series(dtype=object)).dropna():
        if not isinstance(fingerprint, dict) or not fingerprint.get("cpu_model"):
            continue
        name = re.sub(r"\((R|TM|tm|r)\)", "", str(fingerprint["cpu_model"]))
        name = " ".join(name.split())
        count = fingerprint.get("cpu_count")
        cpus.add(f"{name}, {count} CPU{'s' if count != 1 else ''}" if count else name)
    return sorted(cpus)


def run_facts(df: pd.DataFrame, run_id: str, *, timed: bool = True) -> str:
    """One sentence of what the figures of a run were measured on, for every caption; of a
    figure of the model files (not `timed`), only the run they are of: a file's size depends
    on no device, runtime, session or protocol."""
    if not timed:
        return latex_escape(f"Model files of run {run_id}.")
    ok = df[df["status"] == "ok"]
    rows = ok if len(ok) else df
    devices = []
    for device, part in rows.groupby("device", sort=True):
        isa = distinct(part, "isa")
        threads = sorted({int(t) for t in part["threads"].dropna()})
        thread_text = _join([str(t) for t in threads]) + (" thread" if threads == [1] else
                                                          " threads") if threads else ""
        gpus = distinct(part, "accelerator")
        details = "; ".join(filter(None, [
            " / ".join(_cpus(part)),
            f"CPU ISA {' / '.join(isa)}" if isa else "CPU ISA not recorded",
            f"accelerator {' / '.join(gpus)}" if gpus else "", thread_text]))
        devices.append(f"{device} ({details})")
    runtimes = sorted({f"{r} {v}" for r, v in zip(rows["runtime"], rows["runtime_version"],
                                                   strict=True) if pd.notna(r)})
    parts = [f"Measured on {_join(devices)}", f"with {_join(runtimes)}" if runtimes else "",
             sessions_text(rows), f"run {run_id}"]
    how = protocol_text(rows)
    return latex_escape("; ".join(filter(None, parts)) + ".") + (
        f" {latex_note(how)}" if how else "")


# The figures are drawn at most `plots.MAX_HEIGHT_IN` tall, which this share of a two-column
# paper's text height (about 9 in) allows; in a shorter page they are scaled down, keeping their
# proportions, rather than overflow it with their caption.
FIGURE_HEIGHT = "0.72"


def _size(width: str) -> str:
    return f"width=\\{width},height={FIGURE_HEIGHT}\\textheight,keepaspectratio"


def figure_facts(name: str, df: pd.DataFrame) -> str:
    """What one figure of `df` needs said beyond its fixed caption (plain text): the data its
    accuracy was measured on; what the memory figure's whiskers are, where it has any; what the
    heatmap's words mean, where it has any."""
    if name == "accuracy_latency" and (sets := accuracy_sets(df[df["status"] == "ok"])):
        return f"Top-1 on {_join(sets)}."
    if name == "memory" and plots.memory_has_whiskers(df):
        return ("Each figure is the median over the measurement's sessions (fresh processes); "
                "the whisker on the number spans the lowest to the highest session (a range, "
                "not a confidence interval), where they differ.")
    if name == "speedup_heatmap" and plots.heatmap_has_words(df):
        return ("A word in italics: the variant was measured there without a speedup "
                "(unsupported, failed, or no ok fp32 baseline there).")
    return ""


def figures_tex(names: Sequence[str], df: pd.DataFrame, run_id: str,
                incomplete: str | None = None,
                figure_notes: Mapping[str, str] | None = None) -> str:
    """`incomplete`: why the run is not complete (`progress.caveat`), said in every caption;
    `figure_notes`: plain text a figure's caption says of data the run's rows do not hold, by
    figure name, the same notes as the page's captions (`html.write_index`)."""
    caveat = f" {latex_note(incomplete)}" if incomplete else ""
    notes = figure_notes or {}
    out = [
        f"% edgebench figures of run {run_id}. Needs \\usepackage{{graphicx}} (the figures, and",
        "% the tables' \\resizebox) and \\usepackage{booktabs} (the tables); no font encoding.",
        "% Copy this folder beside your .tex and add \\graphicspath{{paper/}} (or its path) to",
        "% the preamble. Each figure is set at one column's width, and never taller than",
        f"% {FIGURE_HEIGHT} of the text height, so that it fits a page with its caption; the",
        "% two-column variant (figure*) is beside it, commented out.",
        "",
    ]
    for name in names:
        label = "fig:" + name.replace("_", "-")
        own = figure_facts(name, df)
        facts = run_facts(df, run_id, timed=name not in plots.FILE_FIGURES) + caveat
        caption = " ".join(filter(None, [CAPTIONS.get(name, plots.PLOT_TITLES.get(name, name)),
                                         latex_escape(own), latex_escape(notes.get(name, "")),
                                         facts]))
        out += [
            "\\begin{figure}[tbp]",
            "  \\centering",
            f"  \\includegraphics[{_size('columnwidth')}]{{{name}-single}}",
            f"  \\caption{{{caption}}}",
            f"  \\label{{{label}}}",
            "\\end{figure}",
            "% \\begin{figure*}[tbp]",
            "%   \\centering",
            f"%   \\includegraphics[{_size('textwidth')}]{{{name}-double}}",
            f"%   \\caption{{{caption}}}",
            f"%   \\label{{{label}}}",
            "% \\end{figure*}",
            "",
        ]
    return "\n".join(out)


def write_paper(
    folder: Path,
    builders: dict[str, plots.FigureBuilder],
    df: pd.DataFrame,
    run: RunInfo,
    tables: Sequence[Table],
    incomplete: str | None = None,
    figure_notes: Mapping[str, str] | None = None,
) -> tuple[list[Path], list[Path]]:
    """Write the page's PNGs into `folder/plots/` and the paper's PDFs, `figures.tex` and table
    `.tex` files into `folder/paper/`; return (PNGs, paper files). Each figure is built once per
    width: the double-column one gives both the PNG and its PDF, unless it is taller than a page
    (the PNG is not held to one). `figure_notes`: as `figures_tex` takes them."""
    plot_dir, paper_dir = folder / "plots", folder / PAPER_DIR
    pngs: list[Path] = []
    files: list[Path] = []
    names = []
    for name, build in builders.items():
        page, double = plots.page_and_print(build)
        if page is None or double is None:
            continue
        names.append(name)
        pngs += plots.save(page, plot_dir, name, ("png",))
        files += plots.save(double, paper_dir, f"{name}-double", ("pdf",))
        single = build(plots.SINGLE)
        if single is not None:
            files += plots.save(single, paper_dir, f"{name}-single", ("pdf",))
    tex = paper_dir / "figures.tex"
    paper_dir.mkdir(parents=True, exist_ok=True)
    tex.write_text(figures_tex(names, df, run.run_id, incomplete, figure_notes),
                   encoding="utf-8")
    files.append(tex)
    for table in tables:
        path = paper_dir / f"{table.name}.tex"
        path.write_text(to_latex(table), encoding="utf-8")
        files.append(path)
    return pngs, files


__all__ = ["CAPTIONS", "PAPER_DIR", "figure_facts", "figures_tex", "run_facts",
           "write_paper"]
