"""`results/README.md` says what the exports hold of the yes/no columns: booleans, not the 1 and 0
SQLite stores. Checked against a real export of a store written session by session."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from harness.report.export import export_table
from harness.results import PROFILE_COLUMNS, RESULT_COLUMNS, SESSION_COLUMNS
from harness.store import Store
from tests.test_report_synthetic import add_job, lognormal_ns
from tests.test_results_schema import README

BOOL_COLUMNS = sorted({c.name for c in (*RESULT_COLUMNS, *SESSION_COLUMNS, *PROFILE_COLUMNS)
                       if c.kind == "bool"})


def test_the_readme_names_every_yes_no_column_and_what_the_exports_write() -> None:
    text = " ".join(README.read_text().split())
    said = re.search(r"Yes/no columns \(([^)]*)\) are true or false\.", text)
    assert said, "results/README.md does not say how yes/no columns read"
    assert sorted(re.findall(r"`(\w+)`", said.group(1))) == BOOL_COLUMNS
    assert ("the exports write booleans: `True`/`False` in CSV, `true`/`false` in JSON, a boolean "
            "column in parquet") in text
    # ... and no row of the tables calls them 1/0
    for line in README.read_text().splitlines():
        name = line.split("|")[1].strip() if line.startswith("| ") else ""
        if name in BOOL_COLUMNS:
            assert not re.match(r"\s*[01] when", line.split("|")[2]), line


def test_the_exports_write_what_the_readme_says(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "x.db"
    with Store(db) as store:
        run = store.begin_run("t", None, ["pi5"])
        add_job(store, run, "net", samples_ns=lognormal_ns(5, seed=1))
        store.finish_run(run)
    export_table(db, run, "results", "csv")
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert row["stable"] in ("True", "False") and row["throttled"] in ("True", "False")
    export_table(db, run, "results", "json")
    (record,) = json.loads(capsys.readouterr().out)
    assert isinstance(record["stable"], bool) and isinstance(record["throttled"], bool)
    export_table(db, run, "sessions", "csv")
    sessions = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {s["capped"] for s in sessions} <= {"True", "False"} and sessions
