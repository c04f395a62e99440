"""The report commands as a user runs them (`edgebench report|compare|export`), and the rule that
only harness.report imports pandas and matplotlib."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.results import RESULT_FIELDS
from harness.store import Store
from tests.conftest import loaded_after_import
from tests.test_report_synthetic import add_job, sessions_ns


@pytest.fixture()
def db(tmp_path: Path) -> tuple[Path, str, str]:
    """Runs of one device; the last is 15% slower on `net` than the one before it, which has
    three earlier runs of history (so compare knows the run-to-run spread)."""
    path = tmp_path / "x.db"
    store = Store(path)
    runs = []
    for k, median in enumerate((10.0, 10.02, 9.98, 10.0, 11.5)):
        run = store.begin_run("edgebench bench", None, ["pi5"])
        with store.transaction() as conn:
            conn.execute(
                "UPDATE runs SET started_at = ? WHERE run_id = ?", (f"2026-12-0{k + 1}", run)
            )
        add_job(
            store,
            run,
            "net",
            samples_ns=sessions_ns(median, between_sd=0.01, seed=k),
            accuracy_top1=0.9,
        )
        add_job(
            store,
            run,
            "net-int8",
            baseline="net",
            accuracy_top1=0.89,
            samples_ns=sessions_ns(4.0, between_sd=0.01, seed=10 + k),
        )
        store.finish_run(run)
        runs.append(run)
    store.close()
    return path, runs[-2], runs[-1]


def test_compare_gate_exit_codes(db, capsys) -> None:
    path, a, b = db
    assert main(["compare", "--db", str(path), a, b]) == 0
    assert main(["compare", "--db", str(path), a, b, "--fail-on-regression"]) == 1
    out = capsys.readouterr().out
    assert "slower" in out and "no change" in out and "net-int8" in out
    assert (
        main(["compare", "--db", str(path), a, b, "--threshold", "0.5", "--fail-on-regression"])
        == 0
    )


def test_export_prints_csv(db, capsys) -> None:
    path, _, b = db
    assert main(["export", "--db", str(path), "--format", "csv"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(csv.columns) == list(RESULT_FIELDS) and set(csv["run_id"]) == {b}


def test_bad_input_is_one_line_on_stderr(db, tmp_path: Path, capsys) -> None:
    path, a, _ = db
    assert main(["report", "--db", str(path), "--run", "nosuchrun"]) != 0
    err = capsys.readouterr().err.strip()
    assert "nosuchrun" in err and len(err.splitlines()) == 1
    assert main(["export", "--db", str(path), "--format", "parquet"]) != 0
    assert "--out" in capsys.readouterr().err
    assert main(["compare", "--db", str(tmp_path / "none.db"), a, a]) != 0
    assert "none.db" in capsys.readouterr().err


def test_report_command_writes_the_folder(db, tmp_path: Path, capsys) -> None:
    path, a, _ = db
    out = tmp_path / "paper"
    assert main(["report", "--db", str(path), "--run", a, "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert (out / "index.html").is_file()
    assert (out / "tables" / "summary.tex").is_file()
    assert (out / "plots" / "accuracy_latency.png").is_file()
    assert not (out / "paper").exists()
    paper = ["report", "--db", str(path), "--run", a, "--out", str(out), "--style", "paper"]
    assert main(paper) == 0
    assert (out / "paper" / "accuracy_latency-single.pdf").is_file()
    assert (out / "paper" / "figures.tex").is_file()
    with pytest.raises(SystemExit):
        main(["report", "--db", str(path), "--out", str(out), "--style", "poster"])
    assert "poster" in capsys.readouterr().err


def test_only_harness_report_imports_pandas_and_matplotlib() -> None:
    # scipy is not in the list: the store combines sessions with harness.report.stats
    modules = "harness.cli, harness.store, harness.report, harness.report.console"
    assert loaded_after_import(modules, ("pandas", "matplotlib")) == []


def test_db_stats_only_reads(db, tmp_path: Path, capsys) -> None:
    """`db stats` opens the file read-only: it neither writes the file nor upgrades an old
    one (a read-write open migrates a schema-1 database in place)."""
    path, _, _ = db
    before = path.read_bytes()
    assert main(["db", "stats", "--db", str(path)]) == 0
    assert path.read_bytes() == before
    old = tmp_path / "v1.db"
    old.write_bytes((Path(__file__).parent / "fixtures" / "store" / "v1.db").read_bytes())
    before = old.read_bytes()
    assert main(["db", "stats", "--db", str(old)]) != 0
    assert "schema version 1" in capsys.readouterr().err
    assert old.read_bytes() == before
