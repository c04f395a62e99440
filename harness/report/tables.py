"""The report's tables as CSV (numbers), Markdown (READMEs, dashboards) and LaTeX (booktabs).

One column specification drives every format, so a header and its unit are written once: the CSV
keeps full-precision numbers under headers that carry units (and an interval's bounds in columns
of their own); Markdown, HTML and LaTeX show the same rounded text, a figure with its 95% interval
as "median [low, high]", LaTeX with cells and headers escaped by pandas' Styler. A missing value
means "not measured" and prints as "n/a" (the accuracy of a latency-only model is n/a, never 0).
Failed and unsupported jobs stay in the tables with their status, and a measurement's flags
(`console.FLAG_MEANINGS`) are listed in a Notes column, so that no number loses its caveat when a
table is pasted elsewhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.agent import protocol
from harness.report import stats
from harness.report.console import (
    FLAG_LABELS,
    FLAG_MEANINGS,
    INTERVAL_REACH,
    NA,
    STATUS_NOTES,
    UNKNOWN_FLAG,
    decimals_for,
    format_interval,
    format_value,
    in_legend_order,
)
from harness.report.console import is_missing as _missing
from harness.report.frame import distinct

# What a speedup is, said the same way wherever one is shown (tables, figure captions, the page):
# `frame.with_baselines` computes it from the session medians, exp(mean log baseline - mean log
# variant), paired or Welch, which is the ratio of the two headlines (each the geometric mean of
# its session medians): "baseline median / median" of a table's own columns is the speedup.
SPEEDUP_DEFINITION = (
    "Speedup is how many times faster than its fp32 baseline (same device, format, runtime and "
    "threads) a variant ran: the ratio of the geometric means of the two measurements' session "
    "medians, baseline over variant (above 1 is faster), with "
    f"its {stats.CONFIDENCE:.0%} t interval on their logs, "
    "paired on the sessions both ran (session k of both ran back to back): where both ran the "
    "same sessions, the ratio of the two Median figures."
)


def accuracy_sets(df: pd.DataFrame) -> list[str]:
    """What the top-1 of `df`'s rows was measured on, one entry per dataset: "digits, 449
    images" (the name where the store has one, the count where it has one): a figure, caption or
    table without them reads as if its accuracy held for any data."""
    data = df[df["accuracy_top1"].notna()] if "accuracy_top1" in df else df.iloc[:0]
    names = (data["dataset"] if "dataset" in data
             else pd.Series(None, index=data.index, dtype=object))
    out = []
    for name, part in data.groupby(names.fillna("").astype(str), sort=True):
        counts = sorted({int(n) for n in pd.to_numeric(
            part.get("accuracy_n", pd.Series(dtype=float))).dropna()})
        images = (" or ".join(f"{n:,}" for n in counts)
                  + (" image" if counts == [1] else " images")) if counts else ""
        out.append(", ".join(filter(None, [str(name), images])))
    return [text for text in out if text]


def _join(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def sessions_text(df: pd.DataFrame) -> str:
    """ "2 sessions (fresh processes, interleaved) per measurement", from the rows that
    measured; "" when none did."""
    ok = df[df["status"] == "ok"] if "status" in df else df
    counts = sorted({int(n) for n in ok["sessions"].dropna()})
    if not counts:  # a failed row's 0 sessions are no protocol ("0 sessions per measurement")
        return ""
    plural = "s" if counts != [1] else ""
    return (f"{_join([str(n) for n in counts])} session{plural} (fresh processes, interleaved) "
            "per measurement")


# What the protocol's settings mean to a reader, in the order said.
_TIMING = ("warmup_s", "warmup_min", "duration_s", "min_iterations", "max_duration_s")


def _seconds(value: Any) -> str:
    return f"{float(value):g} s"


def _protocol_of(settings: dict[str, Any]) -> str | None:
    """One measurement's protocol in words, None where it is the default."""
    merged: dict[str, Any] = {**protocol.DEFAULT_SETTINGS, **settings}
    default: dict[str, Any] = protocol.DEFAULT_SETTINGS
    quick: dict[str, Any] = protocol.QUICK_SETTINGS
    parts = []
    if any(merged[k] != default[k] for k in _TIMING):
        name = "the quick protocol (`--quick`)" if all(
            merged[k] == quick[k] for k in _TIMING) else "a shortened protocol" if float(
            merged["duration_s"]) < float(default["duration_s"]) else "a custom protocol"
        parts.append(
            f"{name}: a {_seconds(merged['warmup_s'])} warm-up and a "
            f"{_seconds(merged['duration_s'])} timed window (at least "
            f"{merged['min_iterations']} runs) per session, against "
            f"{_seconds(default['warmup_s'])} and {_seconds(default['duration_s'])} by default")
    if merged.get("timed_scope") not in (None, default["timed_scope"]):
        parts.append(f"timed {str(merged['timed_scope']).replace('_', ' ')} "
                     "(`--timed-scope`), not the runtime's own run alone")
    return "; ".join(parts) or None


def protocol_text(df: pd.DataFrame) -> str:
    """How the sessions of `df` were timed, when not by the default protocol ("" when they
    were, or when the rows do not say): "the quick protocol (`--quick`): a 0.05 s warm-up and a
    0.2 s timed window ... per session". A quick run's intervals come from two short sessions,
    which a caption must say: only the page's command line showed it."""
    ok = df[df["status"] == "ok"] if "status" in df else df
    found = [_protocol_of(s) for s in ok.get("settings", pd.Series(dtype=object))
             if isinstance(s, dict)]
    if not found:
        return ""
    distinct_texts = sorted({f for f in found if f})
    if not distinct_texts:
        return ""
    if len(distinct_texts) == 1 and None not in found:
        return f"Measured under {distinct_texts[0]}."
    return ("Not all measurements under the default protocol: "
            + "; ".join(f"some under {t}" for t in distinct_texts) + ".")


def row_flags(row: pd.Series) -> list[str]:
    """Status and caveats that must stay next to the numbers they qualify."""
    flags = [] if row["status"] == "ok" else [str(row["status"])]
    stored = row["flags"]
    if isinstance(stored, list | tuple):
        flags += [str(f) for f in stored]
    return flags


@dataclass(frozen=True)
class Column:
    header: str  # with its unit; the key of the column, and its header in Markdown and HTML
    value: Callable[[pd.DataFrame], pd.Series]  # the numbers for the CSV
    text: Callable[[pd.Series], str]  # one row -> display text
    numeric: bool = True  # right-aligned
    optional: bool = False  # left out when no row has a value (energy without a power meter)
    display: bool = True  # in Markdown and HTML (False: CSV only, or LaTeX only)
    latex: bool = True  # in the paper table (which keeps what fits a page width)
    latex_header: str | None = None  # when the paper calls it differently
    caption_if_constant: str | None = None  # LaTeX: a column with one value moves to the caption
    # when the CSV holds something else than the text: a figure whose interval the text shows
    # has its bounds in CSV columns of their own, and its header says "(95% CI)" only in text
    csv_header: str | None = None

    @property
    def csv_name(self) -> str:
        return self.csv_header or self.header


def _key(key: str, factor: float | None = None) -> Callable[[pd.DataFrame], pd.Series]:
    if factor is None:
        return lambda df: df[key]
    return lambda df: df[key].astype("float64") * factor


# Significant digits of a figure in a table's CSV: more than any measurement here holds (a
# nanosecond timer, byte counts), fewer than float arithmetic's noise. A size in MB is bytes
# times 1e-6 and a pooled p90 an interpolation between two samples in ms, and pandas writes the
# shortest text that reads back as the same float: 1.9999999999999998e-05 MB for 20 bytes,
# 0.11799880000000007 ms for 0.1179988.
CSV_DIGITS = 12


def clean_numbers(numbers: pd.DataFrame) -> pd.DataFrame:
    """`numbers` with every float rounded to CSV_DIGITS significant digits (NaN kept), so that
    the CSV says 2e-05 where the arithmetic left 1.9999999999999998e-05."""
    out = numbers.copy()
    for name in out.columns:
        if pd.api.types.is_float_dtype(out[name]):
            out[name] = out[name].map(
                lambda v: v if pd.isna(v) else float(f"{v:.{CSV_DIGITS}g}"))
    return out


def _scaled(value: Any, factor: float) -> Any:
    return value if _missing(value) else float(value) * factor


def _number(
    key: str, digits: int, factor: float = 1.0, sign: bool = False
) -> Callable[[pd.Series], str]:
    spec = f"{'+' if sign else ''},.{digits}f"
    return lambda row: format_value(_scaled(row[key], factor), spec)


REACH_NOTE = (
    f"An interval bound more than {INTERVAL_REACH:,.0f} times its figure (or below a "
    f"{INTERVAL_REACH:,.0f}th of it) is written as that limit, > or <: with few sessions that "
    "disagree the t interval is that wide, and its digits say nothing more."
)


def beyond_reach(df: pd.DataFrame) -> bool:
    """Whether a latency or speedup interval of `df` is written as a limit (`format_interval`)."""
    for key, low, high in (("latency_median_ms", "latency_ci95_low_ms", "latency_ci95_high_ms"),
                           ("speedup", "speedup_ci95_low", "speedup_ci95_high")):
        if key not in df:
            continue
        v, lo, hi = (df[c].astype("float64") for c in (key, low, high))
        if ((v > 0) & ((lo < v / INTERVAL_REACH) | (hi > v * INTERVAL_REACH))).any():
            return True
    return False


def _latency_spec(value: Any) -> str:
    """A latency in ms with 3 decimals, more where that leaves fewer than 3 significant digits:
    a 4 us GPU figure read "0.004 [0.004, 0.005]"."""
    return f",.{max(3, decimals_for(value))}f"


def _latency(key: str) -> Callable[[pd.Series], str]:
    return lambda row: format_value(row[key], _latency_spec(row[key]))


def _with_interval(
    key: str, low: str, high: str, digits: int | None, factor: float = 1.0,
    reach: float | None = INTERVAL_REACH,
) -> Callable[[pd.Series], str]:
    """ "median [low, high]" of a figure and its 95% interval, all with `digits` decimals (None:
    a latency's, `_latency_spec` of the figure)."""
    return lambda row: format_interval(
        _scaled(row[key], factor), _scaled(row[low], factor), _scaled(row[high], factor),
        f",.{digits}f" if digits is not None else _latency_spec(row[key]),
        reach,
    )


def _str(key: str) -> Callable[[pd.Series], str]:
    return lambda row: NA if _missing(row[key]) else str(row[key])


def _speedup_text(row: pd.Series) -> str:
    if not _missing(row["speedup"]) and bool(row["is_baseline"]):
        return "1.00 (baseline)"
    return format_interval(row["speedup"], row["speedup_ci95_low"], row["speedup_ci95_high"], ".2f")


# Marks a pooled p90 below its row's headline median (`P90_NOTE`).
BELOW_MEDIAN = "\N{DAGGER}"
P90_NOTE = (
    "Median: each session's median latency, combined over sessions as their geometric mean, with "
    "its 95% t interval over sessions. p90 pools every timed iteration of all sessions, so a "
    "session much slower than the others (and shorter in iterations) moves the Median but "
    "hardly p90"
)


THROUGHPUT_NOTE = (
    "Throughput: timed iterations over the wall time of each session's timed window, combined "
    "as the Median is, with its interval; it counts what the Median leaves out (the loop "
    "between calls, time the process waited for a CPU), so on a loaded machine it falls where "
    "the Median does not, and speedups are of the Median"
)


def _p90_below_median(row: pd.Series) -> bool:
    median, p90 = row["latency_median_ms"], row["latency_p90_ms"]
    return not (_missing(median) or _missing(p90)) and float(p90) < float(median)


def _p90_text(row: pd.Series) -> str:
    text = _latency("latency_p90_ms")(row)
    return text + BELOW_MEDIAN if _p90_below_median(row) else text


def _sessions_text(row: pd.Series) -> str:
    """ "5/5": ok sessions of those planned."""
    done, planned = row["sessions"], row["sessions_planned"]
    if _missing(done):
        return NA
    return f"{done}/{planned}" if not _missing(planned) else str(done)


def _error_csv(row: pd.Series) -> str:
    """ "model_invalid: <message>": a CSV row is read without the Notes' display text."""
    if _missing(row["error_message"]):
        return "" if _missing(row["error_kind"]) else str(row["error_kind"])
    kind = "" if _missing(row["error_kind"]) else f"{row['error_kind']}: "
    return f"{kind}{row['error_message']}"


def _error_text(row: pd.Series) -> str:
    """The error's message alone: its kind is in the row's Notes, after its status."""
    return "" if _missing(row["error_message"]) else str(row["error_message"])


def _notes_text(row: pd.Series) -> str:
    """The row's status and flags, a failed or unsupported row's status with its error's kind
    ("failed: model_invalid", as the bench's own table says it): the Error column then says
    the message alone, and the kind once ("op_unsupported: ..." there repeated the status)."""
    flags = row_flags(row)
    kind = row["error_kind"]
    if row["status"] != "ok" and not _missing(kind) and str(kind) != flags[0]:
        flags[0] = f"{flags[0]}: {kind}"
    return ", ".join(flags)


def _base_model(row: pd.Series) -> str:
    base = row["base_model"] if not _missing(row["base_model"]) else row["model"]
    return NA if _missing(base) else str(base)


def _notes_values(df: pd.DataFrame) -> pd.Series:
    return df.apply(lambda r: ", ".join(row_flags(r)), axis=1)


def _csv_only(header: str, key: str, factor: float | None = None, optional: bool = False
              ) -> Column:
    """A number the CSV keeps in a column of its own (an interval's bound)."""
    return Column(header, _key(key, factor), lambda row: format_value(row[key], "g"),
                  display=False, latex=False, optional=optional)


# The paper (LaTeX) table leaves out what does not fit a page: p99, throughput, sessions,
# precision (in the technique), top-5, size ratio, params, MACs, model memory, power and the
# error text. The CSV has every column but Base model (Model has it, whole); Markdown and HTML
# leave out Base model, CPU ISA (said under the table) and the CSV's interval bounds.
SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("Device", _key("device"), _str("device"), numeric=False, caption_if_constant="device"),
    Column("Model", _key("model"), _str("model"), numeric=False, latex=False),
    Column(
        "Base model",
        _key("base_model"),
        _base_model,
        numeric=False,
        display=False,
        latex_header="Model",
    ),
    Column("Technique", _key("technique"), _str("technique"), numeric=False),
    Column("Precision", _key("precision"), _str("precision"), numeric=False, latex=False),
    Column(
        "Runtime", _key("runtime"), _str("runtime"), numeric=False, caption_if_constant="runtime"
    ),
    Column("Threads", _key("threads"), _str("threads"), caption_if_constant="threads"),
    # the note under a table names it per device; the CSV, read without a note, per row
    Column("CPU ISA", _key("isa"), _str("isa"), numeric=False, display=False, latex=False),
    Column("Sessions", _key("sessions"), _sessions_text, latex=False),
    Column(
        "Median [ms] (95% CI)",
        _key("latency_median_ms"),
        _with_interval("latency_median_ms", "latency_ci95_low_ms", "latency_ci95_high_ms", None),
        csv_header="Median [ms]",
    ),
    _csv_only("Median CI95 low [ms]", "latency_ci95_low_ms"),
    _csv_only("Median CI95 high [ms]", "latency_ci95_high_ms"),
    Column("p90 [ms]", _key("latency_p90_ms"), _p90_text),
    Column("p99 [ms]", _key("latency_p99_ms"), _latency("latency_p99_ms"), latex=False),
    Column(
        "Throughput [img/s] (95% CI)",
        _key("throughput_wall_ips"),
        _with_interval("throughput_wall_ips", "throughput_ci95_low_ips",
                       "throughput_ci95_high_ips", 0),
        latex=False,
        csv_header="Throughput [img/s]",
    ),
    _csv_only("Throughput CI95 low [img/s]", "throughput_ci95_low_ips", optional=True),
    _csv_only("Throughput CI95 high [img/s]", "throughput_ci95_high_ips", optional=True),
    Column("Speedup [x] (95% CI)", _key("speedup"), _speedup_text, csv_header="Speedup [x]"),
    _csv_only("Speedup CI95 low [x]", "speedup_ci95_low"),
    _csv_only("Speedup CI95 high [x]", "speedup_ci95_high"),
    Column(
        "Top-1 [%] (95% CI)",
        _key("accuracy_top1", 100),
        _with_interval("accuracy_top1", "accuracy_top1_low", "accuracy_top1_high", 2, 100,
                       reach=None),
        csv_header="Top-1 [%]",
    ),
    _csv_only("Top-1 CI95 low [%]", "accuracy_top1_low", 100),
    _csv_only("Top-1 CI95 high [%]", "accuracy_top1_high", 100),
    Column(
        "Delta top-1 [pp]",
        _key("accuracy_top1_delta", 100),
        _number("accuracy_top1_delta", 2, 100, sign=True),
    ),
    Column(
        "Top-5 [%] (95% CI)",
        _key("accuracy_top5", 100),
        _with_interval("accuracy_top5", "accuracy_top5_low", "accuracy_top5_high", 2, 100,
                       reach=None),
        csv_header="Top-5 [%]",
        optional=True,
        latex=False,
    ),
    _csv_only("Top-5 CI95 low [%]", "accuracy_top5_low", 100, optional=True),
    _csv_only("Top-5 CI95 high [%]", "accuracy_top5_high", 100, optional=True),
    Column("Size [MB]", _key("size_bytes", 1e-6), _number("size_bytes", 3, 1e-6)),
    Column("Size ratio", _key("size_ratio"), _number("size_ratio", 3), latex=False),
    Column("Params [M]", _key("params", 1e-6), _number("params", 3, 1e-6), latex=False),
    Column("MACs [M]", _key("macs", 1e-6), _number("macs", 1, 1e-6), latex=False),
    Column("Peak RSS [MiB]", _key("peak_rss_mb"), _number("peak_rss_mb", 1)),
    Column(
        "Model memory [MiB]",
        _key("model_mb"),
        _number("model_mb", 1),
        optional=True,
        latex=False,
    ),
    Column(
        "Energy [mJ/img]",
        _key("energy_mj_per_inference"),
        _number("energy_mj_per_inference", 2),
        optional=True,
    ),
    Column("Power [W]", _key("power_w"), _number("power_w", 2), optional=True, latex=False),
    Column("Notes", _notes_values, _notes_text, numeric=False, optional=True),
    Column(
        "Error",
        lambda df: df.apply(_error_csv, axis=1),
        _error_text,
        numeric=False,
        optional=True,
        latex=False,
    ),
)


@dataclass(frozen=True)
class Table:
    """A table in its two forms: numbers (CSV) and display text (Markdown, HTML, LaTeX)."""

    name: str  # file stem
    caption: str
    numbers: pd.DataFrame
    text: pd.DataFrame  # every column that Markdown/HTML or LaTeX shows
    numeric: frozenset[str] = frozenset()  # text columns to right-align
    display: tuple[str, ...] | None = None  # Markdown/HTML columns; None: all of `text`
    latex: tuple[str, ...] | None = None  # LaTeX columns; None: all of `text`
    latex_headers: dict[str, str] = field(default_factory=dict)
    caption_if_constant: dict[str, str] = field(default_factory=dict)
    flags: list[list[str]] = field(default_factory=list)  # per row
    # Plain text with `backquoted` commands, under the table (in a LaTeX caption): `note` says
    # what holds for this table's rows (its protocol, marks in its cells), `definitions` what
    # its columns are, which the HTML page says once above all its tables.
    note: str = ""
    definitions: str = ""

    @property
    def footnote(self) -> str:
        """What a table read on its own (Markdown, LaTeX) needs under it."""
        return " ".join(filter(None, [self.note, self.definitions]))

    @property
    def shown(self) -> pd.DataFrame:
        """The Markdown/HTML view."""
        return self.text if self.display is None else self.text[list(self.display)]

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        csv, md, tex = (folder / f"{self.name}.{ext}" for ext in ("csv", "md", "tex"))
        self.numbers.to_csv(csv, index=False)
        md.write_text(to_markdown(self), encoding="utf-8")
        tex.write_text(to_latex(self), encoding="utf-8")
        return [csv, md, tex]


@dataclass(frozen=True)
class SaidOnce:
    """The columns of a table with one value, said once above it (the page) or in its caption
    (LaTeX) instead of in every row: `every_row` where every row has it, `every_ok_row` where
    the failed and unsupported rows differ, with nothing recorded (n/a) or, in the columns
    asked for, a value of their own (a failed row's sessions, 0/5) that the caller shows where
    the row says it failed. Each maps a column's header to its one value."""

    every_row: dict[str, str] = field(default_factory=dict)
    every_ok_row: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [*self.every_row, *self.every_ok_row]


def ok_rows(table: Table) -> pd.Series:
    """Which rows of `table` measured (their flags hold no status)."""
    flags = table.flags or [[] for _ in table.text.index]
    return pd.Series([not set(f) & set(STATUS_NOTES) for f in flags], index=table.text.index,
                     dtype=bool)


def said_once(table: Table, columns: Iterable[str], *, min_rows: int = 1,
              own_values: Iterable[str] = ()) -> SaidOnce:
    """Which of `columns` (headers of `table.text`) have one value throughout, read from the
    rows that measured: a failed row's 0/5 sessions or its unrecorded threads brought back a
    column that read 5/5 or 2 in every other row, and "every row: sessions 5/5" could not be
    said of a row that ran none. In `own_values` columns a failed or unsupported row may have
    a value of its own; in the others, only the one value or none (n/a). Nothing is said once
    in a table of fewer than `min_rows` rows."""
    text, own = table.text, set(own_values)
    found = SaidOnce()
    if len(text) < min_rows:
        return found
    ok = ok_rows(table)
    for column in columns:
        values = text[column]
        if values.nunique(dropna=False) == 1:
            found.every_row[column] = values.iloc[0]
            continue
        measured = values[ok]
        if measured.empty or measured.nunique(dropna=False) != 1:
            continue
        if column in own or values[~ok].isin([measured.iloc[0], NA]).all():
            found.every_ok_row[column] = measured.iloc[0]
    return found


def _has_values(df: pd.DataFrame, column: Column) -> bool:
    return any(text not in ("", NA) for text in (column.text(r) for _, r in df.iterrows()))


def build_table(
    df: pd.DataFrame,
    name: str,
    caption: str,
    columns: tuple[Column, ...] = SUMMARY_COLUMNS,
    drop: tuple[str, ...] = (),
    note: str = "",
) -> Table:
    """A Table of `df` (a `with_baselines` frame), without `drop` and empty optional columns."""
    df = df.reset_index(drop=True)
    cols = [c for c in columns if c.header not in drop and (not c.optional or _has_values(df, c))]
    numbers = clean_numbers(pd.DataFrame(
        {c.csv_name: c.value(df) for c in cols if c.display or not c.latex}, index=df.index
    ))
    shown = [c for c in cols if c.display or c.latex]
    text = pd.DataFrame(
        {
            c.header: pd.Series([c.text(r) for _, r in df.iterrows()], index=df.index, dtype=object)
            for c in shown
        },
        index=df.index,
        columns=[c.header for c in shown],
    )
    return Table(
        name,
        caption,
        numbers,
        text,
        numeric=frozenset(c.header for c in shown if c.numeric),
        display=tuple(c.header for c in shown if c.display),
        latex=tuple(c.header for c in shown if c.latex),
        latex_headers={c.header: c.latex_header for c in shown if c.latex_header},
        caption_if_constant={
            c.header: c.caption_if_constant for c in shown if c.caption_if_constant
        },
        flags=[row_flags(r) for _, r in df.iterrows()],
        note=" ".join(filter(None, [note, _marks_note(df)])),
        definitions=_definitions(df),
    )


def _marks_note(df: pd.DataFrame) -> str:
    """What the marks in these rows' cells mean."""
    notes = []
    if len(df) and df.apply(_p90_below_median, axis=1).any():
        notes.append(f"{BELOW_MEDIAN}: a pooled p90 below the row's median: its sessions "
                     "disagree (see Median).")
    if beyond_reach(df):
        notes.append(REACH_NOTE)
    return " ".join(notes)


def _definitions(df: pd.DataFrame) -> str:
    """What the summary columns hold, for a table read without the page around it."""
    sets = accuracy_sets(df)
    accuracy = (f"Top-1: on {_join(sets)}, " if sets else "Top-1: ") + (
        "with its Wilson 95% interval; n/a: not measured (a latency-only model, or a "
        "measurement that failed or was unsupported).")
    return f"{P90_NOTE}. {THROUGHPUT_NOTE}. {SPEEDUP_DEFINITION} {accuracy}"


def to_markdown(table: Table) -> str:
    if table.text.empty:
        return f"**{table.caption}**\n\n(no rows)\n"
    below = f"\n{table.footnote}\n" if table.footnote else ""
    # A pipe or a line break inside a cell (error messages have both) would end the cell or row.
    cells = table.shown.map(lambda v: str(v).replace("\n", " ").replace("|", "\\|"))
    body = cells.to_markdown(
        index=False,
        disable_numparse=True,
        colalign=["right" if c in table.numeric else "left" for c in cells.columns],
    )
    return f"**{table.caption}**\n\n{body}\n{below}"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash ",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde ",
    "^": r"\textasciicircum ",
    # In LaTeX's default font encoding (OT1) these three print as other glyphs: `>` as an
    # inverted question mark. The text commands fall back to the maths symbol there, and need
    # no package, so a paper's own preamble works whatever its encoding.
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    BELOW_MEDIAN: r"\textdagger{}",
}


def latex_escape(text: str) -> str:
    # pandas' Styler escape="latex" leaves `<`, `>` and `|` as they are, which OT1 misprints,
    # and has no public function for a caption: one escape for cells, headers and captions.
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def latex_note(text: str) -> str:
    """Plain text with `backquoted` commands, escaped for LaTeX, the commands in typewriter
    (where `--quick` keeps its two hyphens)."""
    pieces = text.split("`")
    return "".join(f"\\texttt{{{latex_escape(p)}}}" if k % 2 else latex_escape(p)
                   for k, p in enumerate(pieces))


def _latex_units(escaped: str) -> str:
    """Typeset unit markers in an already escaped header."""
    return (
        escaped.replace("[x]", r"[$\times$]")
        .replace("(x)", r"($\times$)")
        .replace("Delta ", r"$\Delta$\,")
        .replace("95\\% CI", r"95\,\% CI")
    )


def _two_rows(header: str) -> tuple[str, str]:
    """ "Median [ms]" -> ("Median", "[ms]"): names above units keep paper columns narrow."""
    name, sep, unit = header.partition(" [")
    return (name, f"[{unit}") if sep else (header, "")


def _width_pt(text: pd.DataFrame) -> float:
    """Rough typeset width of a table at \\small: 4.6 pt a character plus the column gaps."""
    widths = [
        max([len(str(v)) for v in text[col]] + [len(part) for part in col]) for col in text.columns
    ]
    return sum(4.6 * w + 12 for w in widths)


def _short_notes(table: Table, text: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The Notes column with each flag's short label (`console.FLAG_LABELS`), which keeps the
    paper table narrow, and the caption's sentence saying what each one used means: every one,
    those whose label is their name too (`loaded` on every row of a run on a shared machine was
    left unexplained)."""
    if "Notes" not in text.columns or not table.flags:
        return text, ""
    notes = [", ".join(FLAG_LABELS.get(f, f) for f in flags) for flags in table.flags]
    used = [f for f in in_legend_order(f for flags in table.flags for f in flags)
            if f not in STATUS_NOTES]
    text = text.assign(Notes=pd.Series(notes, index=text.index, dtype=object))
    if not used:
        return text, ""
    # said here in full: a paper's reader has no README to look them up in
    names = "; ".join(f"{FLAG_LABELS.get(f, f)}, {FLAG_MEANINGS.get(f, UNKNOWN_FLAG)}"
                      for f in used)
    return text, f" Notes (flags): {names}."


def to_latex(table: Table) -> str:
    """A booktabs table environment, ready for \\usepackage{booktabs} and graphicx; every name
    escaped.

    Columns with one value throughout (device, runtime, threads) move into the caption; flags in
    Notes are short labels, named in the caption. A table wider than its column (or the page, for
    a `table*`) is scaled down to fit it by graphicx's \\resizebox, and only then.
    """
    columns = list(table.text.columns if table.latex is None else table.latex)
    caption = table.caption
    # as the page says them above its tables (`html.table_html`)
    constant = said_once(table, [c for c in columns if c in table.caption_if_constant])
    facts = "; ".join(f"{table.caption_if_constant[c]}: {v}"
                      for c, v in constant.every_row.items())
    if facts:
        caption = f"{caption}. {facts[0].upper()}{facts[1:]}"
    if constant.every_ok_row:
        caption = f"{caption}. Every ok row: " + "; ".join(
            f"{table.caption_if_constant[c]} {v}" for c, v in constant.every_ok_row.items())
    if constant.columns:
        caption += "."
    columns = [c for c in columns if c not in constant.columns]
    text, notes = _short_notes(table, table.text[columns])
    caption = latex_escape(caption + notes) + (
        f" {latex_note(table.footnote)}" if table.footnote else "")
    text.columns = pd.MultiIndex.from_tuples(
        [_two_rows(table.latex_headers.get(c, c)) for c in columns]
    )
    styler = (
        text.style.hide(axis="index")
        .format(formatter=latex_escape)
        .format_index(formatter=lambda h: _latex_units(latex_escape(h)), axis=1)
    )
    latex = styler.to_latex(
        hrules=True,
        column_format="".join("r" if c in table.numeric else "l" for c in columns),
        position="htbp",
        position_float="centering",
        caption=caption,
        label="tab:" + table.name.replace("_", "-"),
        multicol_align="c",
    )
    # A table too wide for one column of a two-column paper spans both and is set tighter.
    wide = _width_pt(text) > 230
    if wide:
        latex = latex.replace("\\begin{table}", "\\begin{table*}", 1).replace(
            "\\end{table}", "\\end{table*}", 1
        )
    size = "\\footnotesize\n\\setlength{\\tabcolsep}{4pt}\n" if wide else "\\small\n"
    latex = latex.replace("\\centering\n", "\\centering\n" + size, 1)
    return _fit_width(latex)


def _fit_width(latex: str) -> str:
    """Wrap the tabular in a \\resizebox that scales it to the line's width when it is wider,
    and leaves it as it is otherwise (\\width is the tabular's natural width)."""
    start, end = latex.index("\\begin{tabular}"), latex.index("\\end{tabular}")
    end += len("\\end{tabular}")
    return (latex[:start] + "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth"
            "\\else\\width\\fi}{!}{%\n" + latex[start:end] + "%\n}" + latex[end:])


def across_devices(df: pd.DataFrame) -> Table | None:
    """Median latency and speedup of each artifact on each device, one column per device."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return None
    index = ["model", "base_model", "technique", "runtime", "threads"]
    ok = ok.assign(
        base_model=ok.apply(_base_model, axis=1),
        **{k: ok[k].astype(object).where(ok[k].notna(), NA) for k in index if k != "base_model"},
    )
    wide = (
        ok.drop_duplicates([*index, "device"])
        .set_index([*index, "device"])[["latency_median_ms", "speedup"]]
        .unstack("device")
    )
    devices = sorted(ok["device"].dropna().unique())
    keys = wide.index.to_frame(index=False)
    heads = {
        "model": "Model",
        "base_model": "Base model",
        "technique": "Technique",
        "runtime": "Runtime",
        "threads": "Threads",
    }
    numbers = keys.drop(columns="base_model").rename(columns=heads)
    text = keys.astype(str).rename(columns=heads)
    cells = []
    for dev in devices:
        median = wide[("latency_median_ms", dev)].to_numpy(dtype=float)
        speedup = wide[("speedup", dev)].to_numpy(dtype=float)
        numbers[f"{dev} median [ms]"] = median
        numbers[f"{dev} speedup [x]"] = speedup
        # the CSV is read without the note under the table, which names it
        numbers[f"{dev} CPU ISA"] = " / ".join(distinct(ok[ok["device"] == dev], "isa")) or NA
        cells.append(f"{dev} [ms] (x)")
        text[cells[-1]] = [
            NA if _missing(m) else format(m, _latency_spec(m))
            + ("" if _missing(s) else f" ({s:.2f})")
            for m, s in zip(median, speedup, strict=True)
        ]
    return Table(
        "across_devices",
        "Median latency on each device, with the speedup over the fp32 baseline on that "
        "device in parentheses",
        clean_numbers(numbers),
        text,
        numeric=frozenset([*cells, "Threads"]),
        display=("Model", "Technique", "Runtime", "Threads", *cells),
        latex=("Base model", "Technique", "Runtime", "Threads", *cells),
        latex_headers={"Base model": "Model"},
        caption_if_constant={"Runtime": "runtime", "Threads": "threads"},
        flags=[[] for _ in range(len(text))],
    )


def isa_text(rows: pd.DataFrame) -> str:
    """Which CPU instruction set each device's figures were measured on, for a table's note:
    int8 kernels, speed and even top-1 change with it, and a table copied out of the report
    must still say it ("CPU ISA: pi5 arm neon asimd; x86 avx512 vnni.")."""
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    parts = []
    for device, part in (ok if len(ok) else rows).groupby("device", sort=True):
        isa = distinct(part, "isa")
        parts.append(f"{device} {' / '.join(isa) if isa else 'not recorded'}")
    return f"CPU ISA: {'; '.join(parts)}." if parts else ""


def file_stem(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def report_tables(df: pd.DataFrame, run_id: str, incomplete: str | None = None) -> list[Table]:
    """All jobs, one table per device, and the across-devices pivot (when anything measured).
    `incomplete`: how the run falls short of its plan (`progress.in_brief`), for the captions."""
    run = f"run {run_id}" + (f", which {incomplete}" if incomplete else "")

    def how(rows: pd.DataFrame) -> str:
        sessions = sessions_text(rows)
        return " ".join(filter(None, [f"{sessions[0].upper()}{sessions[1:]}." if sessions
                                      else "", protocol_text(rows), isa_text(rows)]))

    # a device's rows together, in the order they were measured: devices measured in parallel
    # stored their results interleaved, and the summary alternated between them
    together = df.sort_values("device", kind="stable", na_position="last")
    tables = [build_table(together, "summary", f"All measurements of {run}", note=how(df))]
    for device, part in df.groupby("device", sort=True, dropna=False):
        tables.append(
            build_table(
                part,
                "device_" + file_stem(str(device)),
                f"Results on {device} ({run})",
                drop=("Device",),
                note=how(part),
            )
        )
    pivot = across_devices(df)
    if pivot is not None:
        tables.append(dataclasses.replace(
            pivot, note=how(df), definitions=f"{P90_NOTE.split('. ')[0]}. {SPEEDUP_DEFINITION}"))
    return tables
