"""Figures as text for people: the one formatter of a number (used by the CLI, the tables and the
comparison), and the rich table that `edgebench compare` prints.

Neither pandas nor rich is imported at the top of this module, so that `harness/cli.py` can take
its formatter from here without slowing every command's start.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from harness.report import stats

if TYPE_CHECKING:
    import pandas as pd
    from rich.text import Text

    from harness.report.compare import RunComparison

NA = "n/a"


# The notes of a measurement that did not measure: its status, which says what it means, so the
# legends and captions that explain flags leave them out.
STATUS_NOTES = ("failed", "unsupported")

# What each note of a row means, in the order they are listed: the statuses of a measurement that
# did not measure, then the flags of `harness.report.stats`.
FLAG_MEANINGS = {
    "failed": "the measurement failed; its error says why",
    "unsupported": "the runtime or an operator is not available on this device",
    stats.FLAG_BETWEEN: f"the session medians spread more than {stats.HIGH_BETWEEN_COV:.0%} "
    "(log sd): separate processes disagreed, and the interval is wide for a reason",
    stats.FLAG_WITHIN: f"iterations within a session spread more than {stats.HIGH_WITHIN_COV:.0%} "
    "(median CoV over sessions)",
    stats.FLAG_LOADED: f"something else ran: others kept more than {stats.LOADED_OTHERS_CPUS:g} "
    "CPU busy during a session's timed window (in sessions stored before that was measured: "
    "the 1-minute load average was above the CPU count)",
    stats.FLAG_PROFILE_LOADED: f"something else ran during the profile session (others kept "
    f"more than {stats.LOADED_OTHERS_CPUS:g} CPU busy): its per-operator times are inflated, "
    "the timed figures are not",
    stats.FLAG_THROTTLED: "the device throttled (thermal or power) during a session",
    stats.FLAG_CAPPED: "a session's timed window was cut at its longest duration before it had "
    "its minimum iterations",
    stats.FLAG_FEW_SESSIONS: "one session only: no interval, so no comparison can call it "
    "slower or faster",
    stats.FLAG_UNUSABLE_SESSION: "an ok session's median latency was 0 or not a number (a timer "
    "too coarse for the model, or a broken result): it has no logarithm, so that session is left "
    "out of every latency figure and the sessions they rest on are fewer than the ok sessions",
    stats.FLAG_TOP1_HOST: "top-1 on the device differs from the build host's on the same images "
    f"by one image or more and more than {stats.TOP1_THRESHOLD_POINTS:g} points: the deployed "
    "file computes other answers (where the build host's CPU ISA, the results' host_isa, "
    "is not the device's, int8 kernels alone can do that)",
    stats.FLAG_ACCURACY: "top-1 on the device, scored on other images than the host's (another "
    "number of them), lies outside the host's 95% interval for this artifact",
    stats.FLAG_MIXED: "its sessions ran on devices or runtimes that differ (kernel, ISA, driver, "
    "power mode, runtime version...): a board swapped or upgraded during the run",
    stats.FLAG_CPU_FALLBACK: "part or all of the model ran on the CPU where the device profile "
    "asked for an accelerator (see the placement in the profiles section)",
    stats.FLAG_PACKAGE_ENERGY: "power and energy are RAPL's CPU package counters: the whole "
    "socket, other processes and idle power included, not the model's own energy",
}


# The flags as the bench's summary table shows them: short, so that the table fits a terminal
# without cutting a model's name; the lines under it give each one's stored name and meaning.
FLAG_LABELS = {
    stats.FLAG_BETWEEN: "spread",
    stats.FLAG_WITHIN: "cov",
    stats.FLAG_LOADED: "loaded",
    stats.FLAG_PROFILE_LOADED: "profile loaded",
    stats.FLAG_THROTTLED: "throttled",
    stats.FLAG_CAPPED: "capped",
    stats.FLAG_FEW_SESSIONS: "1 session",
    stats.FLAG_UNUSABLE_SESSION: "unusable session",
    stats.FLAG_TOP1_HOST: "top-1 vs host",
    stats.FLAG_ACCURACY: "top-1 off",
    stats.FLAG_MIXED: "mixed",
    stats.FLAG_CPU_FALLBACK: "cpu fallback",
    stats.FLAG_PACKAGE_ENERGY: "pkg energy",
}


UNKNOWN_FLAG = "see the results README"


def in_legend_order(flags: Iterable[str]) -> list[str]:
    """The distinct `flags` in FLAG_MEANINGS' order, any unknown ones after them."""
    seen = set(flags)
    return [f for f in FLAG_MEANINGS if f in seen] + sorted(seen - set(FLAG_MEANINGS))


def flag_legend(flags: Iterable[str]) -> list[str]:
    """One line per distinct flag among `flags`: its label, stored name and meaning, for under a
    table that shows the labels."""
    lines = []
    for flag in in_legend_order(flags):
        label = FLAG_LABELS.get(flag, flag)
        name = f" ({flag})" if label != flag else ""
        lines.append(f"{label}{name}: {FLAG_MEANINGS.get(flag, UNKNOWN_FLAG)}")
    return lines


def is_missing(value: Any) -> bool:
    """None, NaN or pandas' NA: "not measured", which is never shown as a number."""
    if value is None:
        return True
    try:
        # NaN is the one value unequal to itself; pandas' NA answers NA, which has no truth value
        return bool(value != value)
    except TypeError:
        return True


def format_value(value: Any, spec: str = ".4g", none: str = NA) -> str:
    """A figure as text: real numbers by `spec`, integers and text as they are, `none` when not
    measured."""
    if is_missing(value):
        return none
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral | bool):
        return format(float(value), spec)
    return str(value)


# A bound more than this factor away from its figure is written as that limit ("> 48,000"): two
# sessions 230x apart gave latency 48.2 [0.0, 7006531499428986.0], digits that say nothing.
INTERVAL_REACH = 1000.0


def _limit(value: float) -> str:
    """Three significant digits, never in powers of ten: "48,000", "0.000081"."""
    import numpy as np

    text = np.format_float_positional(value, precision=3, unique=True, fractional=False,
                                      trim="-")
    whole, dot, decimals = text.partition(".")
    return f"{int(whole):,}{dot}{decimals}" if abs(float(whole or 0)) >= 1000 else text


def format_interval(value: Any, low: Any, high: Any, spec: str,
                    reach: float | None = INTERVAL_REACH) -> str:
    """ "12.345 [12.1, 12.6]": a figure with its interval, or just the figure when the interval
    could not be computed; a bound beyond `reach` times the figure (either way) is written as
    that limit: "48.034 [<0.048, >48,000]" (None: never, for fractions such as top-1)."""
    text = format_value(value, spec)
    if is_missing(value) or is_missing(low) or is_missing(high):
        return text
    v, lo, hi = float(value), float(low), float(high)
    if reach is None or not v > 0:
        return f"{text} [{format_value(low, spec)}, {format_value(high, spec)}]"
    low_text = format_value(lo, spec) if lo >= v / reach else f"<{_limit(v / reach)}"
    high_text = format_value(hi, spec) if hi <= v * reach else f">{_limit(v * reach)}"
    return f"{text} [{low_text}, {high_text}]"


def decimals_for(value: Any, digits: int = 3) -> int:
    """How many decimals give `value` `digits` significant digits (none for large values)."""
    if is_missing(value) or float(value) == 0 or not math.isfinite(float(value)):
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(abs(float(value)))))


def format_median_interval(value: Any, low: Any, high: Any, digits: int = 3) -> str:
    """ "0.0710 [0.0645, 0.0800]": a median with its interval, all three with the same decimals,
    those that give the median `digits` significant digits, so that they read as one scale."""
    return format_interval(value, low, high, f".{decimals_for(value, digits)}f")


def format_percent(fraction: Any) -> str:
    """A fraction (top-1 0.992) as the console shows it everywhere: percent, one decimal."""
    return format_value(None if is_missing(fraction) else 100 * float(fraction), ".1f")


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """ "1 run", "2 runs": a count with its noun."""
    return f"{count} {noun if count == 1 else plural_noun or noun + 's'}"


def db_option(db: str | Path) -> str:
    """ " --db PATH" for a follow-up command the CLI prints, so that it works when pasted: empty
    for the default database, the path shell-quoted otherwise."""
    from harness.store import DEFAULT_DB

    if Path(db).resolve() == DEFAULT_DB.resolve():
        return ""
    text = str(db)
    if text.startswith("-"):  # `--db -x.db` would read as two options
        text = os.path.join(".", text)
    return f" --db {shlex.quote(text)}"


def cli_console(*, stderr: bool = False, width: int = 140, **options: Any) -> Any:
    """A rich Console for the command line, one that lets a closed pipe (`edgebench compare ...
    | head -1`) raise BrokenPipeError, which `cli.main` turns into exit 141 as for any command:
    rich's own answer is SystemExit(1), which CI would read as the regression exit code of
    --fail-on-regression."""
    from rich.console import Console

    class CliConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True  # nothing more is written: the `finally` of a Progress, say
            raise BrokenPipeError

    # rich's own width (the terminal's, else $COLUMNS) where it has one; a pipe or a file gets
    # `width`, wider than rich's 80, so that a CI log keeps a table's rows on one line each
    stream = sys.stderr if stderr else sys.stdout
    own = stream.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return CliConsole(stderr=stderr, width=None if own else width, **options)


# The box fitted tables use: no lines between columns, a space either side of each cell, so a
# table of columns `w` is sum(w) + 3 * len(w) + 1 wide.
def _table_width(widths: Iterable[int]) -> int:
    widths = list(widths)
    return sum(widths) + 3 * len(widths) + 1


def _words(text: str) -> list[str]:
    """The pieces a cell may be broken into: words, split at spaces only."""
    return text.split()


def _figure_pieces(text: str) -> list[str]:
    """The pieces of a figure: "1.2 [1.1, 1.3]" breaks after its comma only, so a number and an
    interval's bounds stay together; "99.2 \u2192 98.9 (-0.3) lower" before and after its
    parenthesis."""
    return re.split(r"(?<=[,)]) +| +(?=\()", text.strip())


def _least(texts: Iterable[str], pieces: Any) -> int:
    return max((len(p) for t in texts for line in t.splitlines() or [""] for p in pieces(line)),
               default=0)


def _longest(texts: Iterable[str]) -> int:
    return max((len(line) for t in texts for line in t.splitlines() or [""]), default=0)


def _line_count(text: str, width: int) -> int:
    """How many lines rich wraps `text` into at `width`: greedily, at spaces."""
    count = 0
    for line in text.splitlines() or [""]:
        count += 1
        used = 0
        for word in line.split():
            if used and used + 1 + len(word) > width:
                count += 1
                used = 0
            used += (1 if used else 0) + len(word)
    return count


def _fill(least: dict[str, int], cells: dict[str, list[str]], room: int) -> dict[str, int]:
    """Widths from `least`, with the `room` left given where it saves the most lines of the
    table per column of width (a row is as tall as its tallest cell); what is left then goes to
    the headers, a line saved once."""
    widths = dict(least)
    rows = list(zip(*cells.values(), strict=True))
    cols = list(cells)

    def height(trial: dict[str, int]) -> int:
        return sum(max((_line_count(cell, trial[c]) for c, cell in zip(cols, row, strict=True)),
                       default=1) for row in rows)

    while room > 0:
        now, best, best_gain = height(widths), None, 0.0
        for col in cols:
            for extra in range(1, room + 1):
                saved = now - height({**widths, col: widths[col] + extra})
                if saved > 0:
                    if saved / extra > best_gain:
                        best, best_gain = (col, extra), saved / extra
                    break  # a wider step saves more only by passing this one
        if best is None:
            break
        widths[best[0]] += best[1]
        room -= best[1]
    for col in sorted(cols, key=lambda c: len(c) - widths[c]):  # headers
        extra = min(max(len(col) - widths[col], 0), room)
        widths[col] += extra
        room -= extra
    return widths


def fitted_table(columns: dict[str, list[Any]], width: int, *, names: Iterable[str] = (),
                 wraps: Iterable[str] = (), optional: Iterable[str] = (), left: Iterable[str] = (),
                 **table_options: Any) -> Any:
    """A rich Table of `columns` (header -> one cell per row: text, shown as it is and never as
    rich markup, or a rich Text for style) that fits `width` columns without cutting a word or a
    number: the `names` columns are always whole (they tell the rows apart). In order, as the
    width asks:

    1. every cell and header on one line;
    2. headers wrap between words, the `wraps` columns too, and the `optional` columns are left
       out one by one (the caption says which), every figure still on one line;
    3. figures break after a comma only (an interval's bounds stay whole), or around a
       parenthesis;
    4. the `names` columns are stacked into one, a name above the other;
    5. too narrow for a table: each row as a block of "header  value" lines under its names,
       every column shown (an interval broken at its every space reads worse).

    `left` columns are left-aligned, the rest right-aligned (figures). Only a name longer than
    the whole width is ever folded."""
    from rich.text import Text

    names = [c for c in columns if c in set(names)]
    wraps, left = set(wraps), set(left)
    cells = {col: [c if isinstance(c, Text) else Text(str(c)) for c in values]
             for col, values in columns.items()}  # text as it is, never rich markup
    shown = dict(cells)
    dropped: list[str] = []
    pending = [c for c in optional if c in shown]
    full = {col: _longest([col, *(c.plain for c in values)]) for col, values in cells.items()}
    if _table_width(full.values()) <= width:
        return _table(shown, full, left, wraps, dropped, width, table_options)
    while True:
        least = _least_widths(shown, names, wraps, _words, figures=None)
        if _table_width(least.values()) <= width or not pending:
            break
        dropped.append(pending.pop(0))
        del shown[dropped[-1]]
    for stack, figures in ((False, None), (False, _figure_pieces), (True, _figure_pieces)):
        table_cells = _stacked(shown, names) if stack else shown
        table_names = [" / ".join(names)] if stack and len(names) > 1 else names
        least = _least_widths(table_cells, table_names, wraps, _words, figures)
        if _table_width(least.values()) <= width:
            widths = _fill(least, {col: [c.plain for c in values]
                                   for col, values in table_cells.items()},
                           width - _table_width(least.values()))
            return _table(table_cells, widths, left | set(table_names), wraps, dropped, width,
                          table_options, fixed=True, stacked=stack and len(names) > 1)
    return _blocks(cells, names, width, table_options)  # every column: blocks have room


def _least_widths(cells: dict[str, list[Any]], names: list[str], wraps: set[str],
                  words: Any, figures: Any) -> dict[str, int]:
    """The narrowest each column can be: names whole, headers and `wraps` cells by words, other
    cells whole, or by the `figures` pieces where given."""
    least = {}
    for col, values in cells.items():
        texts = [c.plain for c in values]
        if col in names:
            cell = _longest(texts)
        elif col in wraps:
            cell = _least(texts, words)
        else:
            cell = _least(texts, figures) if figures else _longest(texts)
        least[col] = max(cell, _least([col], words))
    return least


def _stacked(cells: dict[str, list[Any]], names: list[str]) -> dict[str, list[Any]]:
    """The `names` columns as one, each row's names one above the other, in the first name's
    place."""
    from rich.text import Text

    if len(names) < 2:
        return cells
    stacked: dict[str, list[Any]] = {}
    for col, values in cells.items():
        if col == names[0]:
            rows = zip(*(cells[n] for n in names), strict=True)
            stacked[" / ".join(names)] = [Text("\n").join(row) for row in rows]
        elif col not in names:
            stacked[col] = values
    return stacked


def _caption(dropped: list[str], width: int, table_options: dict[str, Any]) -> dict[str, Any]:
    options = dict(table_options)
    if dropped:
        options["caption"] = (f"{' and '.join(dropped)} left out to fit {width} columns"
                              + (f"; {options['caption']}" if options.get("caption") else ""))
    return options


def _table(cells: dict[str, list[Any]], widths: dict[str, int], left: set[str],
           wraps: set[str], dropped: list[str], width: int, table_options: dict[str, Any], *,
           fixed: bool = False, stacked: bool = False) -> Any:
    """The Table itself: columns `widths` wide, exactly where `fixed` (rich then wraps the
    cells that are wider at spaces), else at least (every cell on one line)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # rows of more than one line each (stacked names) are told apart by a blank line
    table = Table(box=box.SIMPLE_HEAD, show_lines=stacked,
                  **_caption(dropped, width, table_options))
    for col, w in widths.items():
        justify: Literal["left", "right"] = "left" if col in left else "right"
        if fixed:
            table.add_column(Text(col), width=w, overflow="fold", justify=justify)
        else:
            table.add_column(Text(col), no_wrap=col not in wraps, min_width=w, overflow="fold",
                             justify=justify)
    for row in zip(*cells.values(), strict=True):
        table.add_row(*row)
    return table


def _blocks(cells: dict[str, list[Any]], names: list[str], width: int,
            table_options: dict[str, Any]) -> Any:
    """Rows too wide for any table, each as its names on a line and a "header  value" line per
    other column under them, values wrapping at spaces."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    options = _caption([], width, table_options)
    others = [c for c in cells if c not in names]
    parts: list[Any] = []
    if options.get("title"):
        parts.append(Text.from_markup(options["title"], style="italic")
                     if isinstance(options["title"], str) else options["title"])
    for i in range(len(next(iter(cells.values()), []))):
        parts.append(Text("  ").join(cells[n][i] for n in names) if names else Text(""))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        for col in others:
            grid.add_row(Text("  " + col), cells[col][i])
        parts.append(grid)
    if options.get("caption"):
        parts.append(Text(options["caption"], style="dim"))
    return Group(*parts)


def _verdict_styles() -> dict[str, str]:
    from harness.report import compare

    return {
        compare.SLOWER: "bold red",
        compare.NEWLY_FAILING: "bold red",
        compare.FASTER: "green",
        compare.FIXED: "green",
        compare.INCONCLUSIVE: "yellow",
        compare.DIFFERENT_ISA: "magenta",
        compare.DIFFERENT_ACCELERATOR: "magenta",
        compare.DIFFERENT_PRECISION: "magenta",
        compare.DIFFERENT_SCOPE: "magenta",
        compare.MIXED: "magenta",
        compare.ONLY_A: "dim",
        compare.ONLY_B: "dim",
        compare.NOT_MEASURED: "dim",
        compare.LOWER_TOP1: "bold red",
        compare.HIGHER_TOP1: "green",
    }


def comparison_rule(threshold: float,
                    top1_threshold: float = stats.TOP1_THRESHOLD_POINTS) -> str:
    """How a comparison decides, in one sentence for the header of its table."""
    return (
        "ratio = B / A of the geometric means of session medians (the A and B medians shown;"
        f" > 1: B is slower), with a {stats.CONFIDENCE:.0%} t interval over sessions widened by"
        " the run-to-run spread (from earlier runs of the same files, with Welch's degrees of"
        " freedom or the history's, the fewer; else assumed, with the sessions' pooled ones);"
        f" slower or faster only when the whole interval lies beyond 1 \u00b1 {threshold:g},"
        " and Holm's rule over all the measurements compared agrees (the chance that any"
        " unchanged one is called slower stays that of one), no change when it lies within,"
        " inconclusive otherwise; different instruction sets, accelerators, precisions or timed"
        " scopes, and measurements whose sessions ran on differing devices (mixed sessions),"
        " are not compared. Top-1 on the same images is lower or higher when it differs by one"
        " image or more and"
        f" by more than {top1_threshold:g} points; lower top-1 is a regression."
    )


def _top1(row: Any) -> str:
    """ "70.0 → 69.7 (-0.3)": top-1 in percent in A and B and the change, where both have one."""
    if is_missing(row.top1_a) or is_missing(row.top1_b):
        return ""
    a, b = 100 * row.top1_a, 100 * row.top1_b
    return f"{a:.1f} \u2192 {b:.1f} ({b - a:+.1f})"


def render_comparison(result: RunComparison, console: Any = None) -> None:
    """Print the comparison as a rich table, with the fingerprint warning and a verdict count."""
    from rich.markup import escape

    if console is None:  # a log gets 160 columns, as the table is wide
        console = cli_console(width=160, highlight=False)
    console.print(
        f"Comparing run [bold]{escape(result.run_b)}[/] (B) against [bold]"
        f"{escape(result.run_a)}[/] (A): "
        + comparison_rule(result.threshold, result.top1_threshold)
    )
    if result.run_a == result.run_b:  # `compare latest latest`, or a gate's first run
        console.print("[yellow]A and B are the same run: each measurement is compared with "
                      "itself[/]")
    for device, keys in result.fingerprint_differences.items():
        console.print(
            f"[bold yellow]warning:[/] device {escape(device)} differs between the runs "
            f"({escape(', '.join(keys))}); compared anyway because it was allowed explicitly."
        )
    rows = list(result.table.itertuples())
    columns, title = _comparison_columns(rows, _verdict_styles())
    console.print(fitted_table(
        columns, console.width, names=("Device", "Model", "Runtime"),
        wraps=("Verdict",), optional=("Sessions A/B",),
        left=("Device", "Model", "Runtime", "Verdict"), header_style="bold", title=title))
    from harness.report.compare import TOP1_CHANGES

    counts = [*result.table["verdict"].value_counts().items(),
              *result.table["accuracy_verdict"][lambda v: v.isin(TOP1_CHANGES)]
              .value_counts().items()]
    console.print(", ".join(f"{n} {v}" for v, n in counts) or "no measurements in either run",
                  highlight=False)
    for note in (together_note(result.table), changed_files_note(result.table),
                 changed_settings_note(result.table)):
        if note:
            console.print(note, highlight=False, markup=False)
    spread = run_spread_note(result.table)
    if spread:
        console.print(spread, highlight=False, markup=False)


def together_note(table: pd.DataFrame) -> str:
    """The measurements slower or faster on their own and inconclusive among all those
    compared (`compare.judge_together`), in one line: their interval alone lies beyond 1 +/- T.
    """
    if "verdict_alone" not in table:
        return ""
    from harness.report.compare import FASTER, INCONCLUSIVE, SLOWER, SPEED_VERDICTS

    judged = int(table["verdict_alone"].isin(SPEED_VERDICTS).sum())
    parts, demoted = [], 0
    for alone in (SLOWER, FASTER):
        rows = table[(table["verdict_alone"] == alone) & (table["verdict"] == INCONCLUSIVE)]
        if len(rows):
            demoted += len(rows)
            parts.append(f"{alone} ({', '.join(sorted({str(m) for m in rows['model']}))})")
    if not parts:
        return ""
    return (f"{plural(demoted, 'measurement')} on {'its' if demoted == 1 else 'their'} own "
            f"{' or '.join(parts)}: inconclusive among the {judged} compared, where one can lie "
            "that far out by chance (Holm's rule).")


def changed_files_note(table: pd.DataFrame) -> str:
    """The models whose A and B are different files (rebuilt in between), in one line: their
    verdicts judge the change of file as much as the device's."""
    changed = table[table["file_changed"].fillna(False).astype(bool)]
    if changed.empty:
        return ""
    names = sorted({str(m) for m in changed["model"]})
    return (f"{plural(len(changed), 'measurement')} of B measured another file than A under the "
            f"same name (rebuilt between the runs, sha256 differs): {', '.join(names)}.")


def changed_settings_note(table: pd.DataFrame) -> str:
    """The pairs timed under other protocol settings in B than in A (a `--quick` run beside a
    full one), in one line: judged, but a shorter warm-up or window can move a median by itself.
    """
    if "settings_changed" not in table:
        return ""
    changed = table[table["settings_changed"].fillna("").astype(str) != ""]
    if changed.empty:
        return ""
    parts = []
    for settings, group in changed.groupby("settings_changed", sort=True):
        names = ", ".join(sorted({str(m) for m in group["model"]}))
        parts.append(f"{settings} ({names})")
    return (f"{plural(len(changed), 'measurement')} of B {'was' if len(changed) == 1 else 'were'}"
            " timed under other protocol settings than A's, A / B: " + "; ".join(parts)
            + ". Judged all the same; a shorter warm-up or timed window can move a median by "
            "itself.")


def run_spread_note(table: pd.DataFrame) -> str:
    """Where each interval's run-to-run spread came from, in one line: from the history of the
    files on the device (how many measurements, with its degrees of freedom) or assumed."""
    judged = table[table["run_sd_from"].astype(str) != ""]
    if judged.empty:
        return ""

    def span(values: pd.Series, fmt: str) -> str:
        low, high = values.min(), values.max()
        return f"{low:{fmt}}" if low == high else f"{low:{fmt}}-{high:{fmt}}"

    parts = []
    history = judged[judged["run_sd_from"].str.startswith("history")]
    if len(history):
        dof = history["run_sd_from"].str.extract(r"\((\d+) d\.f\.\)")[0].astype(int)
        parts.append(f"from the earlier runs of the file for {plural(len(history), 'measurement')}"
                     f" (log-sd {span(history['run_sd'], '.3f')}, {span(dof, 'd')} d.f.)")
    assumed = judged[~judged["run_sd_from"].str.startswith("history")]
    if len(assumed):
        parts.append(f"assumed for {plural(len(assumed), 'measurement')} with fewer than "
                     f"{stats.MIN_HISTORY_RUNS} runs of their file here (log-sd "
                     f"{span(assumed['run_sd'], '.3f')}, at least {stats.RUN_SD_FLOOR:g})")
    return "Run-to-run spread in the intervals: " + "; ".join(parts) + "."


def _comparison_columns(rows: list[Any], styles: dict[str, str]
                        ) -> tuple[dict[str, list[Any]], Text | None]:
    """The comparison's columns, and a title naming the device and threads when every row
    shares them (a column less: the model's name and its figures matter more)."""
    from rich.text import Text

    from harness.report.compare import unjudged_sides

    verdicts = []
    for row in rows:
        verdict = str(row.verdict)
        sides = unjudged_sides(row._asdict(), verdict)
        if sides is not None:
            verdict += f" ({sides[0]} / {sides[1]})"
        verdicts.append(Text(verdict, style=styles.get(row.verdict, "")))
    devices = sorted({str(row.device) for row in rows})
    threads = {format_value(row.threads, none="") for row in rows}
    shared = []
    # Text throughout: names come from users' files, and rich would take "[ms]" for a style tag
    columns: dict[str, list[Any]] = {}
    if len(devices) == 1:
        shared.append(f"on {devices[0]}")
    else:
        columns["Device"] = [Text(str(row.device)) for row in rows]
    columns["Model"] = [Text(str(row.model)) for row in rows]
    columns["Runtime"] = [Text(str(row.runtime)) for row in rows]
    if len(threads) == 1 and rows:
        if threads != {""}:
            shared.append(plural(int(next(iter(threads))), "thread"))
    else:
        columns["Threads"] = [format_value(row.threads, none="") for row in rows]
    columns["Sessions A/B"] = [f"{row.sessions_a}/{row.sessions_b}" for row in rows]
    columns["A median [ms]"] = [_median(row.median_a_ms) for row in rows]
    columns["B median [ms]"] = [_median(row.median_b_ms) for row in rows]
    columns["B/A [95% CI]"] = [format_interval(row.ratio, row.ratio_ci95_low,
                                               row.ratio_ci95_high, ".3f") for row in rows]
    columns["Verdict"] = verdicts
    columns["Top-1 A \u2192 B [%]"] = [_top1_cell(row, styles) for row in rows]
    return columns, Text("Measurements " + ", ".join(shared)) if shared else None


def _median(value: Any) -> str:
    return format_value(value, f".{decimals_for(value)}f")


def _top1_cell(row: Any, styles: dict[str, str]) -> Any:
    from rich.text import Text

    from harness.report.compare import TOP1_CHANGES

    text = _top1(row)
    verdict = str(row.accuracy_verdict or "")
    if text and verdict in TOP1_CHANGES:  # "lower": the header says top-1
        return Text(f"{text} {verdict.split()[0]}", style=styles[verdict])
    return text
