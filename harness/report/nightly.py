"""The nightly's gate and trend report: each measurement against the baseline nightly, and
latency and accuracy over the nightlies, per device and model.

`gate` pairs the nightly with its baseline by `compare_runs` (the rule of `edgebench compare`,
run-to-run spread from the store's history included) and returns plain rows for the JSON summary
and the JUnit XML. Fingerprint differences between the two nightlies (a kernel or runtime update
on a board) do not stop the gate: they are returned with it, and a pair on a different instruction
set still gets no speed verdict. `write_trend` writes `trends.png/pdf` (median latency with its
95% interval over the nightlies, slower than the previous nightly ringed: `plots.trends`),
`accuracy.png/pdf` (top-1 with its Wilson interval: `plots.accuracy_trends`) and `index.html`
with both and the table of every nightly's figures.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report import compare, frame, plots, stats
from harness.store import Store

HISTORY = 30  # nightlies shown in the trend


def gate(store: Store, baseline: str, run_id: str, threshold: float = stats.THRESHOLD
         ) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Every measurement of `run_id` judged against `baseline`, as plain dicts; and the
    fingerprint keys that differ, per device."""
    result = compare.compare_runs(store, baseline, run_id, threshold=threshold,
                                  allow_different_devices=True)
    rows = []
    for rec in result.table.to_dict("records"):
        rows.append({k: compare.plain(v) for k, v in rec.items()})
    return rows, result.fingerprint_differences


def history(store: Store, nightlies: Sequence[str], devices: Sequence[str]) -> pd.DataFrame:
    runs = {r.run_id: r for r in store.runs()}
    ids = list(nightlies)[-HISTORY:]
    df = frame.results_frame(store, ids)
    df = df[df["device"].isin(list(devices))]
    return df.assign(run_started_at=df["run_id"].map({i: runs[i].started_at for i in ids}))


def write_trend(store: Store, run_id: str, nightlies: Sequence[str], devices: Sequence[str],
                out: Path, threshold: float = stats.THRESHOLD) -> list[Path]:
    """The trend report of the nightlies up to `run_id` into `out`; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    df = history(store, nightlies, devices)
    sessions = frame.SessionReader(store)
    sessions.prefetch(df["job_id"])
    verdicts = compare.verdicts_over_runs(df, sessions.medians, threshold=threshold)
    formats = ("png", "pdf")
    written = [*plots.trends(df, out, verdicts, threshold=threshold, formats=formats),
               *plots.accuracy_trends(df, out, formats=formats)]
    page = out / "index.html"
    page.write_text(_page(run_id, df, verdicts, written), encoding="utf-8")
    return [*written, page]


def _cell(row: pd.Series, verdict: str) -> str:
    if row["status"] != "ok":
        return f"<span class=bad>{html.escape(str(row['status']))}</span>"
    text = f"{row['latency_median_ms']:.3g} [{row['latency_ci95_low_ms']:.3g}, " \
           f"{row['latency_ci95_high_ms']:.3g}]" if pd.notna(row["latency_ci95_low_ms"]) \
        else f"{row['latency_median_ms']:.3g}"
    if pd.notna(row.get("accuracy_top1")):
        text += f"<br>top-1 {row['accuracy_top1']:.3f}"
    if verdict == stats.SLOWER:
        return f"<span class=bad>{text}<br>slower</span>"
    if verdict == stats.FASTER:
        return f"{text}<br>faster"
    return text


def _page(run_id: str, df: pd.DataFrame, verdicts: pd.Series, written: list[Path]) -> str:
    runs = (df[["run_id", "run_started_at"]].drop_duplicates("run_id")
            .sort_values(["run_started_at", "run_id"])["run_id"].tolist())
    keys = ["device", "model", "runtime"]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in [*keys, "ISA (CPU)"]) + "".join(
        f"<th>{html.escape(r)}</th>" for r in runs)
    body = []
    for key, part in df.groupby(keys, sort=True):
        cells = []
        for r in runs:
            hit = part[part["run_id"] == r]
            cells.append(_cell(hit.iloc[0], str(verdicts.get(hit.index[0], "")))
                         if len(hit) else "")
        isas = sorted({str(i) for i in part["isa"].dropna()}) or ["not recorded"]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(k))}</td>" for k in key)
                    + f"<td>{html.escape('; '.join(isas))}</td>"
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    images = "".join(f'<p><img src="{p.name}" alt="{p.stem}" style="max-width:100%"></p>'
                     for p in written if p.suffix == ".png")
    return (
        "<!doctype html><meta charset=utf-8>"
        f"<title>edgebench nightly {html.escape(run_id)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:3px 6px;font-size:90%}table{border-collapse:collapse}.bad{color:#D55E00;"
        "font-weight:bold}</style>"
        f"<h1>edgebench nightly {html.escape(run_id)}</h1>"
        "<p>Median latency in ms [95% CI] of each nightly, and top-1 accuracy where the model has "
        "data; <span class=bad>slower</span>: the whole 95% interval of the ratio to the "
        "previous nightly lies above 1 + T (the rule of <code>edgebench compare</code>). The "
        "ISA column names the CPU extensions that picked the kernels of each figure.</p>"
        f"{images}<table><tr>{head}</tr>{''.join(body)}</table>")
