"""Figures as text for people: the one formatter of a number (used by the CLI, the tables and the
comparison), and the rich table that `edgebench compare` prints.

Neither pandas nor rich is imported at the top of this module, so that `harness/cli.py` can take
its formatter from here without slowing every command's start.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from harness.report import stats

if TYPE_CHECKING:
    from harness.report.compare import RunComparison

NA = "n/a"


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
    stats.FLAG_THROTTLED: "the device throttled (thermal or power) during a session",
    stats.FLAG_CAPPED: "a session's timed window was cut at its longest duration before it had "
    "its minimum iterations",
    stats.FLAG_FEW_SESSIONS: "one session only: no interval, so no comparison can call it "
    "slower or faster",
    stats.FLAG_ACCURACY: "top-1 on the device lies outside the host's 95% interval for this "
    "artifact: the deployed model behaves differently",
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
    stats.FLAG_THROTTLED: "throttled",
    stats.FLAG_CAPPED: "capped",
    stats.FLAG_FEW_SESSIONS: "1 session",
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


def format_interval(value: Any, low: Any, high: Any, spec: str) -> str:
    """ "12.345 [12.1, 12.6]": a figure with its interval, or just the figure when the interval
    could not be computed."""
    text = format_value(value, spec)
    if is_missing(value) or is_missing(low) or is_missing(high):
        return text
    return f"{text} [{format_value(low, spec)}, {format_value(high, spec)}]"


def fitted_table(columns: dict[str, list[Any]], width: int, *, names: Iterable[str] = (),
                 wraps: Iterable[str] = (), optional: Iterable[str] = (), left: Iterable[str] = (),
                 **table_options: Any) -> Any:
    """A rich Table of `columns` (header -> one cell per row: text, shown as it is and never as
    rich markup, or a rich Text for style)
    that fits `width` columns without cutting anything short: the `names` columns are always
    whole (they tell the rows apart); the others are whole too where the width allows, the
    `wraps` columns breaking between words only, after leaving out the `optional` columns one by
    one (the caption says which); where even that does not fit, the figures wrap onto more
    lines. `left` columns are left-aligned, the rest right-aligned (figures)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    names, wraps, left = set(names), set(wraps), set(left)
    least = {}
    for col, cells in columns.items():
        texts = [col, *(str(c) for c in cells)]
        least[col] = max(len(w) for t in texts for w in t.split()) if col in wraps else \
            max(len(t) for t in texts)
    shown = dict(columns)
    dropped: list[str] = []
    pending = [c for c in optional if c in shown]
    while True:  # a space either side of each column and one between them
        whole = sum(least[c] + 3 for c in shown) + 1 <= width
        if whole or not pending:
            break
        dropped.append(pending.pop(0))
        del shown[dropped[-1]]
    if dropped:
        table_options["caption"] = (f"{' and '.join(dropped)} left out to fit {width} columns"
                                    + (f"; {table_options['caption']}"
                                       if table_options.get("caption") else ""))
    table = Table(box=box.SIMPLE_HEAD, **table_options)
    for col in shown:
        keep = col in names or (whole and col not in wraps)
        table.add_column(Text(col), no_wrap=keep, min_width=least[col] if keep else None,
                         overflow="fold", justify="left" if col in left else "right")
    for row in zip(*shown.values(), strict=True):  # text as it is, never rich markup
        table.add_row(*(cell if isinstance(cell, Text) else Text(str(cell)) for cell in row))
    return table


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
        "ratio = B / A of the geometric means of session medians (> 1: B is slower), with a"
        f" {stats.CONFIDENCE:.0%} Welch t interval over sessions widened by the run-to-run spread"
        " (from earlier runs of the same files, else assumed); slower or faster only when the"
        f" whole interval lies beyond 1 \u00b1 {threshold:g}, no change when it lies within,"
        " inconclusive otherwise; different instruction sets or accelerators, and measurements"
        " whose sessions ran on differing devices (mixed sessions), are not compared."
        " Top-1 on the same images is lower or higher when it differs by one image or more and"
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
    from rich.console import Console
    from rich.markup import escape
    from rich.text import Text

    from harness.report.compare import DIFFERENT_ACCELERATOR, DIFFERENT_ISA

    if console is None:
        console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
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
    styles = _verdict_styles()
    width = console.width
    rows = list(result.table.itertuples())
    verdicts = []
    for row in rows:
        verdict = str(row.verdict)
        if verdict == DIFFERENT_ISA:
            verdict += f" ({row.isa_a} / {row.isa_b})"
        elif verdict == DIFFERENT_ACCELERATOR:
            verdict += f" ({row.accelerator_a or 'none'} / {row.accelerator_b or 'none'})"
        verdicts.append(Text(verdict, style=styles.get(row.verdict, "")))
    # Text throughout: names come from users' files, and rich would take "[ms]" for a style tag
    table = fitted_table({
        "Device": [Text(str(row.device)) for row in rows],
        "Model": [Text(str(row.model)) for row in rows],
        "Runtime": [Text(str(row.runtime)) for row in rows],
        "Thr.": [format_value(row.threads, none="") for row in rows],
        "Sessions A/B": [f"{row.sessions_a}/{row.sessions_b}" for row in rows],
        "A median [ms]": [format_value(row.median_a_ms, ".3f") for row in rows],
        "B median [ms]": [format_value(row.median_b_ms, ".3f") for row in rows],
        "B/A [95% CI]": [format_interval(row.ratio, row.ratio_ci95_low, row.ratio_ci95_high,
                                         ".3f") for row in rows],
        "Verdict": verdicts,
        "Top-1 A \u2192 B [%]": [_top1_cell(row, styles) for row in rows],
    }, width, names=("Device", "Model", "Runtime"), wraps=("Verdict",),
        left=("Device", "Model", "Runtime", "Verdict"), header_style="bold")
    console.print(table)
    counts = [*result.table["verdict"].value_counts().items(),
              *result.table["accuracy_verdict"][lambda v: v.isin(_TOP1_COUNTED)]
              .value_counts().items()]
    console.print(", ".join(f"{n} {v}" for v, n in counts) or "no jobs in either run")


_TOP1_COUNTED = (stats.LOWER_TOP1, stats.HIGHER_TOP1)


def _top1_cell(row: Any, styles: dict[str, str]) -> Any:
    from rich.text import Text

    text = _top1(row)
    verdict = str(row.accuracy_verdict or "")
    if text and verdict in _TOP1_COUNTED:  # "lower": the header says top-1
        return Text(f"{text} {verdict.split()[0]}", style=styles[verdict])
    return text
