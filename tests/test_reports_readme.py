"""`reports/README.md` documents exactly what a report holds: the figures `plots.FIGURE_NAMES`
draws, the columns `tables.SUMMARY_COLUMNS` shows and the flags `console.FLAG_MEANINGS` explains,
so that the documentation cannot drift from the code again (it listed a `size_memory` figure and
columns the tables no longer had)."""

from __future__ import annotations

import re
from pathlib import Path

from harness.report.console import FLAG_LABELS, FLAG_MEANINGS
from harness.report.plots import FIGURE_NAMES
from harness.report.tables import SUMMARY_COLUMNS

README = Path(__file__).resolve().parent.parent / "reports" / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert found, f"reports/README.md has no section '## {title}'"
    return found.group(0)


def _names(cell: str) -> list[str]:
    """The names a table cell lists: its `backquoted` names, else its comma-separated words."""
    return re.findall(r"`([^`]+)`", cell) or [n.strip() for n in cell.split(",") if n.strip()]


def _rows(section: str, first_header: str) -> list[list[str]]:
    """The cells of each body row of the Markdown table whose first header is `first_header`."""
    rows: list[list[str]] = []
    inside = False
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            if inside:
                break
            continue
        if not inside:
            inside = cells[0] == first_header
            continue
        if not set(cells[0]) <= set("-: "):  # not the |---| line
            rows.append(cells)
    assert rows, f"reports/README.md has no table headed '| {first_header} |'"
    return rows


def _differences(documented: list[str], actual: list[str]) -> str:
    missing = [n for n in actual if n not in documented]
    extra = [n for n in documented if n not in actual]
    return f"missing {missing}, not in the code {extra}, documented {documented}"


def test_plots_table_lists_exactly_the_figures_in_their_order() -> None:
    documented = [n for row in _rows(_section("Plots"), "file") for n in _names(row[0])]
    assert documented == list(FIGURE_NAMES), _differences(documented, list(FIGURE_NAMES))


def test_tables_column_list_names_exactly_the_displayed_headers_in_their_order() -> None:
    shown = [c.header for c in SUMMARY_COLUMNS if c.display]
    documented = [n for row in _rows(_section("Tables"), "column") for n in _names(row[0])]
    assert documented == shown, _differences(documented, shown)


def test_csv_and_latex_only_columns_are_named() -> None:
    text = _section("Tables")
    unnamed = [name for c in SUMMARY_COLUMNS for name in {c.header, c.csv_name}
               if f"`{name}`" not in text]
    assert not unnamed, f"reports/README.md does not name the columns {unnamed}"


def test_flags_table_explains_exactly_the_flags_with_their_labels() -> None:
    rows = _rows(_section("Tables"), "flag")
    documented = [n for row in rows for n in _names(row[0])]
    assert sorted(documented) == sorted(FLAG_MEANINGS), _differences(documented,
                                                                     list(FLAG_MEANINGS))
    assert len(documented) == len(set(documented)), "a flag is documented twice"
    for row in rows:
        flag, label = _names(row[0])[0], _names(row[1])[0]
        assert label == FLAG_LABELS.get(flag, flag), f"{flag}: label {label!r}"
