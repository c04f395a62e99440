"""The static HTML report: `index.html` beside its tables/ and plots/, opened from disk, no server.

Everything the page needs is inline (CSS, a few lines of script that sort tables on a header
click) or a relative path (plot images, table downloads), so the folder can be zipped, mailed or
served by any static host, and nothing is fetched from a CDN. Tables are rendered by pandas'
Styler, which escapes every cell; rows of failed or unsupported jobs and rows with flags carry a
CSS class per flag and its name in their Notes column, so the caveat survives without colour
too, and the page explains every flag it shows.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness.report import progress as run_progress
from harness.report import stats
from harness.report.console import FLAG_MEANINGS, STATUS_NOTES, UNKNOWN_FLAG, in_legend_order
from harness.report.frame import distinct, flatten
from harness.report.paper import figure_facts
from harness.report.plots import FILE_FIGURES, PLOT_TITLES
from harness.report.tables import (
    SPEEDUP_DEFINITION,
    THROUGHPUT_NOTE,
    SaidOnce,
    Table,
    ok_rows,
    protocol_text,
    row_flags,
    said_once,
    sessions_text,
)

if TYPE_CHECKING:
    from harness.store import RunInfo

CSS = """
body { font-family: system-ui, "DejaVu Sans", sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1a1a1a; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid
#ccc; } h3 { margin-top: 1.4rem; } .meta { color: #555; } code { font-size: .9em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { padding: .25rem .5rem; border-bottom: 1px solid #ddd; text-align: left;
         white-space: nowrap; vertical-align: top; }
td.error { white-space: normal; overflow-wrap: anywhere; }
/* in the main tables (not the failures') the error takes room before other columns widen, and
   shows its first three lines, as tall as a row with an interval; in a table with errors a
   flag may break (at most twice in 6rem) to leave it 9rem at least */
table[id^="T_"] td.error { width: 20rem; }
table.with-errors td.notes { min-width: 6rem; }
td.error .cut { display: -webkit-box; -webkit-box-orient: vertical; -webkit-line-clamp: 3;
                line-clamp: 3; overflow: hidden; min-width: 9rem; font-size: .9em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable { font-size: .75rem; }
table.sortable th, table.sortable td { padding: .2rem .2rem; }
table.sortable td:first-child { position: sticky; left: 0; }
:where(table.sortable td:first-child) { background: #fff; }
table.sortable th:first-child { left: 0; z-index: 1; }
table.sortable th, table.sortable td.num, table.sortable td.notes,
table.sortable td.name { white-space: normal; }
table.sortable th { vertical-align: bottom; }
table.sortable td.notes { font-size: .9em; }
.ci { color: #555; font-size: .85em; }
table.sortable th { cursor: pointer; background: #f3f3f3; position: sticky; top: 0; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
.flag-high_between_session_spread, .flag-high_cov, .flag-loaded, .flag-capped,
.flag-single_session { background: #fff4d6; }
.flag-throttled { background: #e8f0fd; }
.flag-accuracy_outside_host_interval, .flag-top1_differs_from_host,
.flag-mixed_sessions { background: #f3e8fd; }
.flag-cpu_fallback { background: #fde0c6; } .badge.cpu_fallback { background: #f6b98a; }
.flag-failed, .flag-unsupported { background: #fde8e8; }
.badge { display: inline-block; padding: 0 .4rem; border-radius: .6rem; font-size: .8rem;
         background: #ffe19c; }
.badge.failed, .badge.unsupported { background: #f6c6c6; }
.badge.throttled { background: #c6d8f6; } .badge.ok { background: #cdeccd; }
.badge.accuracy_outside_host_interval, .badge.top1_differs_from_host { background: #dcc6f6; }
dl.legend { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem;
            font-size: .85rem; } dl.legend dd { margin: 0; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #444; }
.banner { background: #fde8e8; border: 1px solid #e0a0a0; padding: .6rem 1rem;
          border-radius: .3rem; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: .1rem 1rem;
        font-size: .85rem; }
dl.kv dt { font-weight: 600; } dl.kv dd { margin: 0; font-family: monospace; }
"""

# Sort on header click; numbers (leading number of the text) sort numerically, "n/a" sorts last.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.querySelectorAll("thead th");
  heads.forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var key = function (row) {
        var text = row.cells[col].textContent.trim();
        var num = parseFloat(text.replace(/,/g, ""));
        return isNaN(num) || !/^[-+]?[0-9.,]/.test(text) ? text.toLowerCase() : num;
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { return typeof x === "number" ? -1 : 1; }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _css_name(flag: str) -> str:
    # Styler writes cell classes as they are; a flag read from a database is text like any other.
    return re.sub(r"[^A-Za-z0-9_-]", "_", flag)


# Columns said once above a table where every row has the same value, besides those its LaTeX
# caption says once (`Table.caption_if_constant`): every session of every measurement ran. A
# failed or unsupported row's own count (0/5) goes to its Notes, beside its status.
SAID_ONCE = {"Sessions": "sessions"}
# Names a reader scans down, which may break where a name has parts.
NAME_COLUMNS = frozenset({"Model", "Technique"})
# A figure with its interval ("0.0448 [0.0296, 0.0678]"): the interval may go on a line of
# its own, and break after its comma.
_WITH_INTERVAL = re.compile(r"^(.*?) (\[[^\]]*\])$")
# Where a name may break: after the - of a variant's name or the > of a chain of techniques
# ("distill>prune30>qat_int8"), never inside a part a reader reads as one word.
_BREAK_AFTER = re.compile(r"(?<=[->])")
# Where a flag may break, in a table with errors: after each _ of its name.
_FLAG_BREAK_AFTER = re.compile(r"(?<=_)")


def _interval_apart(cell: Any) -> str:
    found = _WITH_INTERVAL.match(str(cell))
    if not found:
        return _e(cell)
    return f'{_e(found[1])} <span class="ci">{_e(found[2])}</span>'


def _breakable(cell: Any, after: re.Pattern[str] = _BREAK_AFTER) -> str:
    return "<wbr>".join(_e(part) for part in after.split(str(cell)))


def _flags_breakable(cell: Any) -> str:
    return _breakable(cell, _FLAG_BREAK_AFTER)


def _cut(cell: Any) -> str:
    """An error as its first lines (`.cut`, ending in an ellipsis where it goes on), whole in
    its tooltip."""
    text = _e(cell)
    return f'<span class="cut" title="{text}">{text}</span>' if text else ""


def _own_values_in_notes(text: pd.DataFrame, table: Table, constant: SaidOnce) -> pd.DataFrame:
    """`text` with each failed or unsupported row's own value of a column said once for the ok
    rows (its sessions, "sessions 0/5") added to its Notes, after its status."""
    ok = ok_rows(table)
    notes = text["Notes"].copy() if "Notes" in text.columns else None
    for column, value in constant.every_ok_row.items():
        if column not in SAID_ONCE or notes is None:
            continue
        for row in text.index[~ok & (text[column] != value)]:
            status, *flags = str(notes[row]).split(", ")
            notes[row] = ", ".join([status, f"{SAID_ONCE[column]} {text.at[row, column]}",
                                    *flags])
    return text if notes is None else text.assign(Notes=notes)


def table_html(table: Table) -> str:
    """One sortable table, id `T_<name>`; every cell of a flagged row has `flag-<flag>` classes.

    It fits a 1400 px page: the summary of a one-device run, 22 columns each set on one line,
    was 3,080 px wide, and a reader scrolled sideways from the Model to its Top-1 and back. So
    headers wrap at their spaces, a figure's interval goes under it where its column is too
    narrow for both, names break after their parts (`_BREAK_AFTER`), Notes between flags, and
    a column with one value in every row (device, runtime, threads, sessions) is said once
    above the table, as the LaTeX tables say it in their caption; or in every ok row, where a
    failed row's value is not recorded or, for its sessions (0/5), said in its Notes
    (`tables.said_once`). An error message wraps,
    inside a word where it must (a path), in the room the other columns leave it, up to 20rem:
    a run with failures was 1586 px wide while its Error column kept 20rem. It shows its first
    three lines (`.cut`), whole in its tooltip and in the failures table: on two devices the
    column was left 67 px, and ONNX Runtime's 388-character message made its row 797 px tall.
    So that three lines hold the gist ("[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model
    from..."; its kind is in Notes), a table with errors leaves the column 9rem: the Device breaks
    after its parts, as the Model does, and a flag after its underscores, its rows keeping the
    three lines an interval takes. A table without errors is laid out as before. Where a
    table is still wider than the page, it scrolls, its first column staying in view."""
    text = table.shown
    if text.empty:
        return "<p>(no rows)</p>"
    said_as = {**table.caption_if_constant, **SAID_ONCE}
    constant = said_once(table, [c for c in text.columns if c in said_as], min_rows=2,
                         own_values=SAID_ONCE if "Notes" in text.columns else ())
    text = _own_values_in_notes(text, table, constant)
    facts = " ".join(
        f"{lead}: {'; '.join(f'{said_as[c]} {v}' for c, v in said.items())}."
        for lead, said in (("Every row", constant.every_row),
                           ("Every ok row", constant.every_ok_row)) if said)
    text = text.drop(columns=constant.columns)
    with_errors = "Error" in text.columns and bool(
        text["Error"].fillna("").astype(str).str.strip().ne("").any())
    flags = table.flags or [[] for _ in text.index]
    row_classes = [" ".join(f"flag-{_css_name(f)}" for f in row) for row in flags]

    names = (NAME_COLUMNS | {"Device"}) if with_errors else NAME_COLUMNS

    def kind(column: str) -> str:
        return ("error" if column == "Error" else "num" if column in table.numeric
                else "notes" if column == "Notes" else "name" if column in names else "")

    def cell_class(column: str, row_class: str) -> str:
        return " ".join(filter(None, (row_class, kind(column))))

    # each formatter escapes the text it is given, and adds only the breaks
    by_kind = {"num": _interval_apart, "name": _breakable, "error": _cut,
               "notes": _flags_breakable if with_errors else _e}
    formatters = {c: by_kind.get(kind(c), _e) for c in text.columns}

    classes = pd.DataFrame(
        {c: [cell_class(c, rc) for rc in row_classes] for c in text.columns}, index=text.index
    )
    styler = (
        text.style.hide(axis="index")
        .format(formatters)
        .format_index(escape="html", axis=1)  # headers carry device names
        .set_td_classes(classes)
        .set_table_attributes(f'class="sortable{" with-errors" if with_errors else ""}"')
        .set_uuid(table.name)
    )
    every_row = f'<p class="meta every-row">{_e(facts)}</p>' if facts else ""
    cut = ('<p class="meta errors-cut">An error longer than three lines ends in '
           "&hellip; here: point at it for the whole message, or read it in "
           '<a href="#failures">what did not run, and why</a>.</p>' if with_errors else "")
    return f'{every_row}{cut}<div class="scroll">{styler.to_html()}</div>'


def _kv(flat: dict[str, Any]) -> str:
    if not flat:
        return "<p>(not recorded)</p>"
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_kv_value(k, v))}</dd>"
                    for k, v in sorted(flat.items()))
    return f'<dl class="kv">{items}</dl>'


def _kv_value(key: str, value: Any) -> Any:
    """A fingerprint's or state's value as the page writes it: memory (`_mb`, MiB as the agent
    reads /proc/meminfo and NVML) in whole MiB, as the tables' memory, with GiB beside it from
    1 GiB ("mem_total_mb 24105.55078125" read as a figure measured to the byte); the state's
    time as a UTC date, not seconds since 1970, and its load averages to two decimals."""
    number = isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)
    if key == "loadavg" and isinstance(value, list):  # 1, 5 and 15 minutes, as `uptime` says
        return ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    if key.endswith("_mb") and number:
        return f"{value:,.0f} MiB" + (f" ({value / 1024:,.1f} GiB)" if value >= 1024 else "")
    if key == "time" and number:  # the agent's clock when it read the state, in seconds
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return value


def _badges(flags: Sequence[str]) -> str:
    return " ".join(f'<span class="badge {_e(f)}">{_e(f)}</span>' for f in flags)


def _flag_counts(df: pd.DataFrame) -> dict[str, int]:
    """How many rows carry each flag, in the legend's order (statuses apart)."""
    counts: dict[str, int] = {}
    for flags in df.apply(row_flags, axis=1) if len(df) else []:
        for flag in flags:
            counts[flag] = counts.get(flag, 0) + 1
    return {f: counts[f] for f in in_legend_order(counts) if f not in STATUS_NOTES}


def flag_legend(flags: Sequence[str], *, anchor: bool = False) -> str:
    """What each of `flags` means, as a definition list; `anchor`: the page's one legend of
    flags, the summary's, `#flags`, to which the tables link."""
    items = "".join(
        f"<dt>{_badges([f])}</dt><dd>{_e(FLAG_MEANINGS.get(f, UNKNOWN_FLAG))}</dd>"
        for f in flags
    )
    anchored = ' id="flags"' if anchor else ""
    return f'<dl class="legend"{anchored}>{items}</dl>'


def _tables_legend(df: pd.DataFrame) -> str:
    """What the flags in the tables' Notes mean: the summary's legend (`#flags`) for all but
    the statuses, which the tables add. The tables had a legend of all sixteen of their own,
    whatever the run: a run with three had them explained twice, and a reader look for the
    other thirteen."""
    shown = in_legend_order(f for flags in (df.apply(row_flags, axis=1) if len(df) else [])
                            for f in flags)
    statuses = [f for f in shown if f in STATUS_NOTES]
    if not shown:
        return "Notes would list a row's flags; no row carries one.</p>"
    head = "Notes list a row's flags, and a coloured row carries one"
    if not statuses:
        return f'{head}; what each means is <a href="#flags">in the summary</a>.</p>'
    where = ', the others <a href="#flags">in the summary</a>' if len(statuses) < len(shown) else ""
    return f"{head}; what its status means is here{where}:</p>{flag_legend(statuses)}"


# A flag on more than this share of a run's measurements (and on several) is said once for the
# run instead of once a row: on a noisy host every measurement has a wide spread, and a list of
# them all would hide the one caveat that is about a model.
COMMON_FLAG_SHARE = 0.5
COMMON_FLAG_MIN = 4


def _common_flags(row_flag_lists: Sequence[Sequence[str]]) -> list[str]:
    counts: dict[str, int] = {}
    for flags in row_flag_lists:
        for flag in flags:
            counts[flag] = counts.get(flag, 0) + 1
    return [f for f, n in counts.items()
            if n >= COMMON_FLAG_MIN and n > COMMON_FLAG_SHARE * len(row_flag_lists)]


def _summary(df: pd.DataFrame, progress: run_progress.RunProgress | None = None) -> str:
    """Counts, devices, models, what failed and the caveats; `progress`: how much of its plan
    the run holds (None: taken as complete)."""
    if df.empty:
        how = f": it {run_progress.state(progress)}" if progress else ""
        return f'<p id="failures">No measurement of this run is stored{_e(how)}.</p>'
    counts = df["status"].value_counts()
    flag_counts = _flag_counts(df)
    status_line = " ".join(
        f'<span class="badge {_e(s)}">{int(counts.get(s, 0))} {_e(s)}</span>'
        for s in ("ok", "failed", "unsupported")
        if counts.get(s, 0)
    )
    flag_line = " ".join(
        f'<span class="badge {_e(k)}">{v} {_e(k)}</span>' for k, v in flag_counts.items()
    )
    devices = ", ".join(f"<code>{_e(d)}</code>" for d in sorted(df["device"].dropna().unique()))
    models = ", ".join(f"<code>{_e(m)}</code>" for m in df["model"].dropna().unique())
    of_plan = (f" of {progress.measurements_planned} planned"
               if progress and progress.measurements_planned is not None else "")
    parts = [
        f"<p><b>Measurements:</b> {len(df)}{of_plan} &mdash; {status_line} {flag_line}</p>",
        f"<p><b>Devices:</b> {devices or 'none'}</p>",
        f"<p><b>Models:</b> {models or 'none'}</p>",
    ]
    bad = df[df["status"] != "ok"]
    if bad.empty:
        complete = progress is None or progress.complete
        parts.append('<p id="failures">Every measurement succeeded.</p>' if complete
                     else '<p id="failures">No stored measurement failed; the run is not '
                     'complete (see the note at the top).</p>')
    else:
        rows = "".join(
            f'<tr class="flag-{_e(r.status)}"><td>{_e(r.device)}</td><td>{_e(r.model)}</td>'
            f"<td>{_e(r.runtime)}</td><td>{_badges([str(r.status)])}</td>"
            f'<td>{_e(r.error_kind)}</td><td class="error">{_e(r.error_message)}</td></tr>'
            for r in bad.itertuples()
        )
        parts.append(
            "<h3>What did not run, and why</h3>"
            '<div class="scroll"><table id="failures" class="sortable"><thead><tr>'
            "<th>Device</th><th>Model</th><th>Runtime</th><th>Status</th><th>Error kind</th>"
            f"<th>Error</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    ok = df[df["status"] == "ok"]
    row_flag_lists = list(ok.apply(row_flags, axis=1)) if len(ok) else []
    common = _common_flags(row_flag_lists)
    items = "".join(
        f"<li>{sum(f in flags for flags in row_flag_lists)} of {len(ok)} measurements: "
        f"{_badges([f])}, more a property of the device during this run than of any model"
        "</li>"
        for f in common
    ) + "".join(
        f"<li><code>{_e(r['model'])}</code> on {_e(r['device'])} ({_e(r['runtime'])}): "
        f"{_badges(rest)}</li>"
        for (_, r), flags in zip(ok.iterrows(), row_flag_lists, strict=True)
        if (rest := [f for f in flags if f not in common])
    )
    how = protocol_text(df)
    if how:  # every interval of the run is from sessions timed this way
        items = f'<li id="protocol">{_code_spans(how)}</li>' + items
    if items:
        parts.append(f'<h3>Caveats</h3><ul id="caveats">{items}</ul>')
    if flag_counts:  # the one legend of the page's flags; the tables' adds the statuses
        parts.append(f"<p>What the flags mean:</p>{flag_legend(list(flag_counts), anchor=True)}")
    return "\n".join(parts)


def _devices(df: pd.DataFrame) -> str:
    out = []
    for device, part in df.groupby("device", sort=True):
        # Each job's fingerprint names its own runtime's version: show them all together.
        fingerprint: dict[str, Any] = {}
        for fp in part["device_fingerprint"]:
            fingerprint.update(flatten(fp))
        before = [(m, flatten(s)) for m, s in zip(part["model"], part["state_before"], strict=True)]
        after = [(m, flatten(s)) for m, s in zip(part["model"], part["state_after"], strict=True)]
        before = [b for b in before if b[1]][:1]
        after = [a for a in after if a[1]][-1:]
        kind = part["device_kind"].dropna()
        # The instruction set picks the kernels a runtime runs: results on another are not
        # comparable, so it is said outright rather than left in the fingerprint.
        isa = distinct(part, "isa") or ([str(fingerprint["isa"])] if fingerprint.get("isa") else [])
        isa_line = " / ".join(f"<code>{_e(v)}</code>" for v in isa) or "not recorded"
        gpus = distinct(part, "accelerator")  # the GPU a model ran on, named like the ISA
        if gpus:
            isa_line += "; <b>Accelerator:</b> " + " / ".join(f"<code>{_e(v)}</code>" for v in gpus)
        out.append(
            f"<h3>{_e(device)}{f' ({_e(kind.iloc[0])})' if len(kind) else ''}</h3>"
            f'<p class="isa"><b>ISA:</b> {isa_line}</p>'
            f"<details open><summary>Fingerprint</summary>{_kv(fingerprint)}</details>"
        )
        for label, states in (("before the first job", before), ("after the last job", after)):
            model, state = states[0] if states else ("", {})
            which = f" (<code>{_e(model)}</code>)" if model else ""
            out.append(f"<details><summary>State {label}{which}</summary>{_kv(state)}</details>")
    return "\n".join(out) or "<p>(no devices)</p>"


# How a run ended, for the line under the page's title: "finished 2026-...", "interrupted ...".
_ENDED = {"finished": "finished", "interrupted": "interrupted", "incomplete": "ended incomplete",
          "failed": "failed"}


def run_line(run: RunInfo) -> str:
    """When the run began and how it stands, its suite, command and edgebench version, as HTML;
    what the run did not record is left out."""
    if run.status == "running":
        ended = "still running"
    elif run.status in _ENDED:
        ended = f"{_ENDED[run.status]} {_e(run.finished_at or '(time not recorded)')}"
    else:
        ended = f"status {_e(run.status)}" + (f", ended {_e(run.finished_at)}"
                                               if run.finished_at else "")
    parts = [f"Started {_e(run.started_at)}, {ended}"]
    if run.suite:
        parts.append(f"suite <code>{_e(run.suite)}</code>")
    if run.command:
        parts.append(f"command <code>{_e(run.command)}</code>")
    if run.harness_version:
        parts.append(f"edgebench {_e(run.harness_version)}")
    return "; ".join(parts)


def _code_spans(text: str) -> str:
    """Escaped `text` with its `backquoted` commands set as code."""
    pieces = text.split("`")
    return "".join(f"<code>{_e(p)}</code>" if k % 2 else _e(p) for k, p in enumerate(pieces))


def _repeating_the_summary(tables: Sequence[Table], df: pd.DataFrame) -> list[Table]:
    """The tables a run of one device holds twice: its device's own table is the summary's
    rows, and the across-devices table their Median and Speedup. `make bench`'s page showed
    its 23 measurements three times, a reader scrolling past two copies to the plots. Their
    files are still written (a paper may want either), and linked beside the summary's."""
    if df.empty or df["device"].nunique(dropna=False) != 1:
        return []
    return [t for t in tables if t.name.startswith("device_") or t.name == "across_devices"]


def write_index(
    folder: Path,
    run: RunInfo,
    df: pd.DataFrame,
    tables: Sequence[Table],
    table_files: dict[str, list[Path]],
    plots: Sequence[Path],
    *,
    pruned_sessions: int = 0,
    paper_files: Sequence[Path] = (),
    operators: str = "",
    figure_notes: Mapping[str, str] | None = None,
) -> Path:
    """Write `folder/index.html`; paths in `table_files`, `plots` and `paper_files` (what
    `report --style paper` wrote) must lie under `folder`. `pruned_sessions`: sessions of this
    run whose raw samples `edgebench db prune` dropped; `operators`: the per-operator profiles
    section (`report.profile.html_section`), if any; `figure_notes`: what a figure's caption
    says of data the run's rows do not hold, by figure name (the trend's rebuilt files,
    `plots.rebuilt_note` of its history)."""

    def rel(path: Path) -> str:
        return _e(path.relative_to(folder).as_posix())

    def downloads(table: Table) -> str:
        return " ".join(f'<a href="{rel(p)}">{_e(p.suffix[1:].upper())}</a>'
                        for p in table_files.get(table.name, []))

    repeated = _repeating_the_summary(tables, df)
    also = (" With one device, its own table and the across-devices table are these rows "
            "again, as files only: " + "; ".join(f"<code>{_e(t.name)}</code> {downloads(t)}"
                                                 for t in repeated) + "." if repeated else "")
    table_sections = []
    for table in (t for t in tables if t.name not in {r.name for r in repeated}):
        table_sections.append(
            f'<h3 id="t-{_e(table.name)}">{_e(table.caption)}</h3>'
            f'<p class="meta">Download: {downloads(table)}. Click a header to sort.'
            f'{also if table.name == "summary" else ""}</p>' + table_html(table)
            + (f'<p class="meta">{_code_spans(table.note)}</p>' if table.note else "")
        )
    paper = {p.name: p for p in paper_files}
    # how every figure was measured: said in each caption, as figures.tex says it
    sessions = sessions_text(df)
    measured = " ".join(filter(None, [f"{sessions[0].upper()}{sessions[1:]}." if sessions
                                      else "", protocol_text(df)]))
    notes = figure_notes or {}
    figures = []
    for png in (p for p in plots if p.suffix == ".png"):
        title = PLOT_TITLES.get(png.stem, png.stem)
        how = "" if png.stem in FILE_FIGURES else measured
        pdfs = [
            f'<a href="{rel(paper[f"{png.stem}-{width}.pdf"])}">PDF, {width} column</a>'
            for width in ("single", "double")
            if f"{png.stem}-{width}.pdf" in paper
        ]
        links = f" ({', '.join(pdfs)})" if pdfs else ""
        said = " ".join(filter(None, [figure_facts(png.stem, df), notes.get(png.stem), how]))
        figures.append(
            f'<figure id="f-{_e(png.stem)}"><img src="{rel(png)}" alt="{_e(title)}">'
            f"<figcaption>{_e(title)}{links}. "
            f"{_code_spans(said)}"
            "</figcaption></figure>"
        )
    if "figures.tex" in paper:
        figures.insert(0, f'<p class="meta">For a paper: <a href="{rel(paper["figures.tex"])}">'
                       "figures.tex</a> includes every figure with a caption written from this "
                       "run, next to the tables as booktabs LaTeX, in the same folder.</p>")
    elif figures:
        figures.insert(0, '<p class="meta">PDF figures for a paper (one and two columns, fonts '
                       "embedded) and their LaTeX: <code>edgebench report --style paper</code>."
                       "</p>")
    meta = run_line(run)
    progress = run_progress.run_progress(run, df)
    note = run_progress.caveat(progress)
    banner = (f'<p class="banner" id="incomplete"><b>Not a complete run.</b> '
              f"{_code_spans(note)}</p>" if note else "")
    confidence = f"{stats.CONFIDENCE:.0%}"
    pruned = (
        f'<p class="meta">The raw samples of {pruned_sessions} sessions of this run were pruned '
        "(<code>edgebench db prune</code>): their distributions are not drawn; every figure in "
        "the tables was computed when they were stored and is kept.</p>"
        if pruned_sessions
        else ""
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgebench report {_e(run.run_id)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>edgebench report: run <code>{_e(run.run_id)}</code></h1>
<p class="meta">{meta}</p>
{banner}
<nav><a href="#summary">Summary</a> &middot; <a href="#tables">Tables</a> &middot;
<a href="#plots">Plots</a> &middot; {'<a href="#operators">Operators</a> &middot; '
                                      if operators else ""}<a href="#devices">Devices</a></nav>
<h2 id="summary">Summary</h2>
{_summary(df, progress)}
<h2 id="tables">Tables</h2>
<p class="meta">Each measurement is several sessions (fresh processes, interleaved with the
other artifacts of the run). Latency in ms: the headline (Median) is each session's median,
combined over sessions as their geometric mean, with a {confidence} t interval over sessions
on their logs, p90 and p99 pool every sample. {_e(THROUGHPUT_NOTE)}.
{_e(SPEEDUP_DEFINITION)} Accuracy comes
with its Wilson
{confidence} interval; n/a means the model is benchmarked for latency only.
{_tables_legend(df)}
{"".join(table_sections)}
<h2 id="plots">Plots</h2>
{pruned}{"".join(figures) or "<p>(nothing to plot: no successful measurements)</p>"}
{operators}
<h2 id="devices">Devices</h2>
{_devices(df)}
<script>{SCRIPT}</script>
</body>
</html>
"""
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
