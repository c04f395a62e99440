"""The nightly's gate and trend report: each measurement against the baseline nightly, and
latency and accuracy over the nightlies, per device and model.

`gate` pairs the nightly with its baseline by `compare_runs` (the rule of `edgebench compare`,
run-to-run spread from the store's history included) and returns plain rows for the JSON summary
and the JUnit XML. Fingerprint differences between the two nightlies (a kernel or runtime update
on a board) do not stop the gate: they are returned with it, and a pair on a different instruction
set still gets no speed verdict. `write_trend` writes `trends.png/pdf` (median latency with its
95% interval over the nightlies, a panel per device, each measurement relative to its own median
(its last file's where it was rebuilt),
what changed in the last nightly in colour, slower than the previous nightly ringed:
`plots.trends`, by `compare.verdicts_over_runs`, which judges each nightly's measurements
together as the gate does),
`accuracy.png/pdf` (top-1 with its Wilson interval; at farm scale each model's change from its
own median, what changed in the last nightly in colour: `plots.accuracy_trends`, by the gate's
top-1 rule and `--top1-threshold`, `compare.accuracy_over_runs`) and `index.html`:
first the verdict, for the operator who opens it in the morning (the exit code and what it
means, the baseline (each device's where they differ), each device's outcome with the reason,
the suite entries that did not build, the counts of verdicts, the measurements not gated for want
of a baseline measurement, and every regression, links to `summary.json` and `junit.xml`), then
both figures (a file rebuilt under the same name boxed where its sha256 changes, and named under
them: `plots.rebuilt_note`) and the table of every nightly's figures.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report import compare, frame, plots, stats
from harness.report.console import format_interval
from harness.store import Store

HISTORY = 30  # nightlies shown in the trend


def gate(store: Store, baseline: str, run_id: str, threshold: float = stats.THRESHOLD,
         top1_threshold: float = stats.TOP1_THRESHOLD_POINTS
         ) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Every measurement of `run_id` judged against `baseline`, as plain dicts; and the
    fingerprint keys that differ, per device."""
    result = compare.compare_runs(store, baseline, run_id, threshold=threshold,
                                  top1_threshold=top1_threshold, allow_different_devices=True)
    return result.records(), result.fingerprint_differences


def history(store: Store, nightlies: Sequence[str], devices: Sequence[str]) -> pd.DataFrame:
    runs = {r.run_id: r for r in store.runs()}
    ids = list(nightlies)[-HISTORY:]
    df = frame.results_frame(store, ids)
    df = df[df["device"].isin(list(devices))]
    order = {r: i for i, r in enumerate(runs)}  # the order the runs were begun
    return df.assign(run_started_at=df["run_id"].map({i: runs[i].started_at for i in ids}),
                     run_order=df["run_id"].map(order))


def write_trend(store: Store, run_id: str, nightlies: Sequence[str], devices: Sequence[str],
                out: Path, threshold: float = stats.THRESHOLD,
                summary: dict[str, Any] | None = None,
                top1_threshold: float = stats.TOP1_THRESHOLD_POINTS) -> list[Path]:
    """The trend report of the nightlies up to `run_id` into `out`; the files written. With
    the nightly's `summary` (harness/farm/summary.py) the page opens with its verdict. The
    verdicts of the page and figures are the gate's, with its thresholds (`threshold`, and
    `top1_threshold` in points)."""
    out.mkdir(parents=True, exist_ok=True)
    df = history(store, nightlies, devices)
    sessions = frame.SessionReader(store)
    sessions.prefetch(df["job_id"])
    verdicts = compare.verdicts_over_runs(df, sessions.medians, threshold=threshold)
    accuracy = compare.accuracy_over_runs(df, top1_threshold=top1_threshold)
    formats = ("png", "pdf")
    written = [*plots.trends(df, out, verdicts, threshold=threshold, formats=formats),
               *plots.accuracy_trends(df, out, accuracy, formats=formats)]
    page = out / "index.html"
    status = "" if summary is None else status_block(summary)
    page.write_text(_page(run_id, df, verdicts, accuracy, written, status, top1_threshold),
                    encoding="utf-8")
    return [*written, page]


def _cell(row: pd.Series, verdict: str, top1_verdict: str = "",
          top1_before: float | None = None) -> str:
    """One nightly's figures of a measurement; `top1_verdict`: its top-1 against the nightly
    before (`compare.accuracy_over_runs`), whose change is shown, in points from `top1_before`,
    when it is lower or higher."""
    if row["status"] != "ok":
        return f"<span class=bad>{html.escape(str(row['status']))}</span>"
    text = f"{row['latency_median_ms']:.3g} [{row['latency_ci95_low_ms']:.3g}, " \
           f"{row['latency_ci95_high_ms']:.3g}]" if pd.notna(row["latency_ci95_low_ms"]) \
        else f"{row['latency_median_ms']:.3g}"
    if pd.notna(top1 := row.get("accuracy_top1")):
        text += f"<br>top-1 {top1:.3f}"
        if top1_verdict in compare.TOP1_CHANGES and top1_before is not None:
            change = f"{100 * (top1 - top1_before):+.1f} points"
            text += (f" <span class=bad>{change}</span>" if top1_verdict == compare.LOWER_TOP1
                     else f" ({change})")
    if verdict == stats.SLOWER:
        return f"<span class=bad>{text}<br>slower</span>"
    if verdict == stats.FASTER:
        return f"{text}<br>faster"
    return text


def _e(value: Any) -> str:
    """A value as HTML text: names come from model files and the farm file."""
    return html.escape("" if value is None else str(value))


# Verdicts in the order the status block counts them: what needs a look first.
COUNTED = (compare.SLOWER, compare.NEWLY_FAILING, compare.INCONCLUSIVE, *compare.UNJUDGED,
           compare.ONLY_A, compare.FASTER, compare.NO_CHANGE, compare.FIXED, compare.ONLY_B)
# ... and of top-1, beside them
TOP1_COUNTED = compare.TOP1_CHANGES


def _top1(m: dict[str, Any]) -> str:
    """ "top-1 70.0% &rarr; 69.7%": a pair's top-1 in the baseline and now."""
    return f"top-1 {100 * m['top1_a']:.1f}% &rarr; {100 * m['top1_b']:.1f}%"


def _ratio(m: dict[str, Any]) -> str:
    if m.get("ratio") is None:
        return ""
    return format_interval(m["ratio"], m.get("ratio_ci95_low"), m.get("ratio_ci95_high"), ".3f")


def _isa(m: dict[str, Any]) -> str:
    a, b = m.get("isa_a"), m.get("isa_b")
    return f"{a} (baseline); {b} (now)" if a and b and a != b else str(b or a or "not recorded")


def rebuilt_line(summary: dict[str, Any]) -> str:
    """One line naming the measurements rebuilt since their baseline, or "" when none."""
    names = summary.get("rebuilt") or []
    if not names:
        return ""
    return (f"{len(names)} measurement{'s' if len(names) != 1 else ''} measured another file "
            "than their baseline under the same name (rebuilt since, sha256 differs): their "
            "verdicts judge the new file, not the board alone: " + "; ".join(names))


def status_block(summary: dict[str, Any]) -> str:
    """The verdict of the nightly as HTML: exit code, devices, counts of verdicts, the
    regressions, links to the files CI reads."""
    code = summary["exit_code"]
    baseline = summary.get("baseline")
    devices = summary["devices"]
    measurements = summary["measurements"]
    parts = [f"<p class={'ok' if code == 0 else 'bad'}><b>Exit code {code}</b>: "
             f"{_e(summary.get('exit_meaning'))}</p>"]
    baselines = summary.get("baselines") or {}
    if not baseline:
        said = ("none, the first nightly with ok measurements on these devices (a measurement "
                "that fails counts as newly failing: it never ran ok before)")
    elif len(set(baselines.values())) > 1:
        said = ("each device's last nightly that measured it ok: " + ", ".join(
            f"{_e(device)} {_e(run) if run else 'none'}" for device, run in baselines.items()))
    else:
        said = f"nightly {_e(baseline)}"
    parts.append(f"<p>Baseline: {said}"
                 + f"; run {_e(summary.get('status'))}; threshold T = "
                 f"{summary.get('threshold', stats.THRESHOLD):.0%}, top-1 "
                 f"{summary.get('top1_threshold', stats.TOP1_THRESHOLD_POINTS):g} points.</p>")
    # ok, failed and skipped always; unsupported (measured nothing) and interrupted where any
    statuses = ["ok", "failed", "skipped", *sorted({d["status"] for d in devices}
                                                   - {"ok", "failed", "skipped"})]
    by_status = {s: [d for d in devices if d["status"] == s] for s in statuses}
    parts.append("<p>Devices: " + ", ".join(f"{len(v)} {k}" for k, v in by_status.items())
                 + ".</p>")
    rows = []
    for d in devices:
        why = "; ".join(_e(t) for t in [d.get("message"), *(d.get("notes") or [])] if t)
        mark = "" if d["status"] == "ok" else " class=bad"
        rows.append(f"<tr><td>{_e(d['name'])}</td><td>{_e(d.get('place'))}</td>"
                    f"<td{mark}>{_e(d['status'])}</td><td>{why}</td>"
                    f"<td>{_e(d.get('attempts'))}</td><td>{_e(d.get('sessions_run'))}</td></tr>")
    parts.append("<table><tr><th>device</th><th>labgrid place</th><th>status</th>"
                 "<th>why, notes</th><th>attempts</th><th>sessions run</th></tr>"
                 + "".join(rows) + "</table>")
    failed_builds = summary.get("build_failures") or []
    if failed_builds:
        parts.append(f"<p class=bad>{len(failed_builds)} suite "
                     f"{'entry' if len(failed_builds) == 1 else 'entries'} did not build "
                     "(measured on no device):</p><table><tr><th>suite entry</th>"
                     "<th>why</th></tr>"
                     + "".join(f"<tr><td>{_e(f['entry'])}</td><td class=bad>{_e(f['error'])}"
                               "</td></tr>" for f in failed_builds) + "</table>")
    counts = {v: sum(m.get("verdict") == v for m in measurements) for v in COUNTED}
    counts.update({v: sum(m.get("accuracy_verdict") == v for m in measurements)
                   for v in TOP1_COUNTED})
    shown = [v for v in (*COUNTED, *TOP1_COUNTED) if counts[v] or v in (
        compare.SLOWER, compare.NEWLY_FAILING, compare.INCONCLUSIVE, compare.LOWER_TOP1)]
    def count(verdict: str) -> str:
        # in red when measurements with this verdict fail the gate
        column = "accuracy_verdict" if verdict in TOP1_COUNTED else "verdict"
        bad = counts[verdict] > 0 and bool(compare.failing_verdicts({column: verdict}))
        return f"<span{' class=bad' if bad else ''}>{counts[verdict]} {_e(verdict)}</span>"

    parts.append(f"<p>Measurements: {len(measurements)}; " + ", ".join(map(count, shown))
                 + ".</p>")
    not_gated = Counter(str(m["not_gated"]) for m in measurements if m.get("not_gated"))
    if not_gated:  # a caveat, not a failure: nothing to compare with is no regression
        n = sum(not_gated.values())
        parts.append(f"<p class=warn>Not gated: {n} measurement{'s' if n != 1 else ''} ran ok "
                     "with no baseline measurement they can be judged against ("
                     + "; ".join(f"{n}: {_e(why)}" for why, n in not_gated.items()) + ").</p>")
    regressions = [m for m in measurements if compare.is_regression(m)]
    if regressions:
        rows = []
        for m in regressions:
            figures = (f"{m['median_a_ms']:.4g} &rarr; " if m.get("median_a_ms") is not None
                       else "") + (f"{m['median_b_ms']:.4g}" if m.get("median_b_ms") is not None
                                   else "")
            verdicts = compare.failing_verdicts(m)
            what = "; ".join(filter(None, (
                _ratio(m) if m.get("verdict") == compare.SLOWER else "",
                _top1(m) if m.get("accuracy_verdict") == compare.LOWER_TOP1 else "")))
            what = what or _e(f"{m.get('status_b')}: {m.get('error_b') or 'no result'}")
            rows.append("<tr>" + "".join(f"<td>{_e(m.get(k))}</td>" for k in
                                         ("device", "model", "format", "runtime"))
                        + f"<td class=bad>{_e(', '.join(verdicts))}</td><td>{what}</td>"
                        f"<td>{figures}</td><td>{_e(_isa(m))}</td></tr>")
        parts.append("<h2>Regressions</h2><table><tr><th>device</th><th>model</th>"
                     "<th>format</th><th>runtime</th><th>verdict</th>"
                     "<th>ratio to baseline [95% CI], top-1 change, or the failure</th>"
                     "<th>median ms (baseline &rarr; now)</th><th>ISA (CPU)</th></tr>"
                     + "".join(rows) + "</table>")
    else:
        parts.append("<p>No regression.</p>")
    if rebuilt_line(summary):
        parts.append(f"<p class=warn>{_e(rebuilt_line(summary))}.</p>")
    differences = summary.get("fingerprint_differences") or {}
    if differences:
        parts.append("<p>Changed on the device since the baseline (listed, not gated): "
                     + "; ".join(f"{_e(dev)}: {_e(', '.join(keys))}"
                                 for dev, keys in differences.items()) + ".</p>")
    parts.append('<p>For CI: <a href="summary.json">summary.json</a> (every measurement with '
                 'its verdict), <a href="junit.xml">junit.xml</a>.</p>')
    return "<div class=status>" + "".join(parts) + "</div>"


def _page(run_id: str, df: pd.DataFrame, verdicts: pd.Series, accuracy: pd.DataFrame,
          written: list[Path], status: str = "",
          top1_threshold: float = stats.TOP1_THRESHOLD_POINTS) -> str:
    runs = frame.in_run_order(df.drop_duplicates("run_id"))["run_id"].tolist()
    keys = ["device", "model", "runtime"]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in [*keys, "ISA (CPU)"]) + "".join(
        f"<th>{html.escape(r)}</th>" for r in runs)
    body = []
    for key, part in df.groupby(keys, sort=True):
        cells = []
        for r in runs:
            hit = part[part["run_id"] == r]
            if not len(hit):
                cells.append("")
                continue
            index = hit.index[0]
            before = accuracy.at[index, "top1_before"]
            cells.append(_cell(hit.iloc[0], str(verdicts.get(index, "")),
                               str(accuracy.at[index, "accuracy_verdict"]),
                               None if pd.isna(before) else float(before)))
        isas = sorted({str(i) for i in part["isa"].dropna()}) or ["not recorded"]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(k))}</td>" for k in key)
                    + f"<td>{html.escape('; '.join(isas))}</td>"
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    images = "".join(f'<p><img src="{p.name}" alt="{p.stem}" style="max-width:100%"></p>'
                     for p in written if p.suffix == ".png")
    # within the trend, not only against the baseline (the status block's `rebuilt_line`)
    rebuilt = plots.rebuilt_note(df)
    if rebuilt and images:
        images += f"<p class=warn>{_e(rebuilt)}</p>"
    return (
        "<!doctype html><meta charset=utf-8>"
        f"<title>edgebench nightly {html.escape(run_id)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:3px 6px;font-size:90%}table{border-collapse:collapse}.bad{color:#D55E00;"
        "font-weight:bold}.ok{color:#009E73}.warn{color:#B8860B;font-weight:bold}"
        ".status{margin-bottom:1.5em}</style>"
        f"<h1>edgebench nightly {html.escape(run_id)}</h1>"
        f"{status}"
        "<h2>Trends</h2>"
        "<p>Median latency in ms [95% CI] of each nightly, and top-1 accuracy where the model has "
        "data; <span class=bad>slower</span>: the whole 95% interval of the ratio to the "
        "previous nightly lies above 1 + T, and Holm's rule over that nightly's measurements "
        "agrees (the rule of <code>edgebench compare</code> and of the gate). A top-1 "
        "that differs from the nightly before on the same images by one image or more and by "
        f"more than {top1_threshold:g} points (the gate's rule, <code>--top1-threshold</code>) "
        "shows the change in points: the same images go through the same file each night, so "
        "it is a change of what the board computes, unless the file was rebuilt in between "
        "(said above, where it was against the baseline; the figures box the first nightly of a "
        "rebuilt file, break its line there and name it under them). The ISA column names the "
        "CPU extensions that picked the kernels of each figure.</p>"
        f"{images}<table><tr>{head}</tr>{''.join(body)}</table>")
