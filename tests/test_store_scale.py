"""Results at farm scale: pruning raw samples of older runs, size figures, compaction, streamed
sample exports, and reports of pruned runs. Speed and memory targets are not tested here; they are
measured by `benchmarks/store_scale.py`."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.errors import EdgebenchError, StoreError
from harness.report import run_export, run_report
from harness.report.export import SAMPLE_COLUMNS
from harness.store import DEFAULT_DB, Store, check_folder
from tests.test_report_synthetic import demo_store


def _history(path: Path, runs: int = 4, jobs: int = 3, sessions: int = 2, n: int = 50,
             kernels: Sequence[str] = ()) -> tuple[Store, list[str]]:
    """`runs` runs of `jobs` measurements, each of `sessions` sessions with distinct samples;
    each run started a day and an hour before the next. With `kernels`, run i's sessions ran on
    a device fingerprint with kernel `kernels[i]`."""
    store = Store(path)
    rng = np.random.default_rng(7)
    ids = []
    for r in range(runs):
        run = store.begin_run("test", None, ["pi5"])
        for j in range(jobs):
            job_id = f"{run}-{j}"
            for s in range(sessions):
                ns = rng.integers(1_000_000, 2_000_000, n + 10 * s + j)
                store.add_session(
                    {"job_id": job_id, "session": s, "status": "ok", "n": ns.size,
                     "median_ms": float(np.median(ns)) / 1e6,
                     "fingerprint": {"kernel": kernels[r]} if kernels else None},
                    ns,
                    {"run_id": run, "job_id": job_id, "device": "pi5", "model": f"m{j}",
                     "status": "ok", "sessions": s + 1, "latency_median_ms": 1.5})
        store.finish_run(run)
        ids.append(run)
    with store.transaction() as conn:
        for age, run in enumerate(reversed(ids)):
            conn.execute("UPDATE runs SET started_at = strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', ?)"
                         " WHERE run_id = ?", (f"-{25 * age} hours", run))
    return store, ids


def _snapshot(db: Path) -> tuple[list[tuple], list[tuple], dict[str, bool]]:
    """Every result row, every session row without its samples, and which sessions keep them."""
    conn = sqlite3.connect(db)
    results = conn.execute("SELECT * FROM results ORDER BY job_id").fetchall()
    names = [r[1] for r in conn.execute("PRAGMA table_info(sessions)") if r[1] != "samples"]
    sessions = conn.execute(f"SELECT {', '.join(names)} FROM sessions ORDER BY job_id, session"
                            ).fetchall()
    kept = {f"{j}/{s}": blob is not None
            for j, s, blob in conn.execute("SELECT job_id, session, samples FROM sessions")}
    conn.close()
    return results, sessions, kept


@pytest.mark.parametrize("keep", ["2", "2d"])
def test_prune_drops_only_older_samples_and_keeps_every_summary(tmp_path: Path, keep: str) -> None:
    db = tmp_path / "h.db"
    store, runs = _history(db)
    before_results, before_sessions, _ = _snapshot(db)
    kept_samples = {run: [store.session_samples(f"{run}-{j}") for j in range(3)]
                    for run in runs[-2:]}

    pruned = store.prune_samples(keep)
    # the newest two runs, started now and 25 hours ago, are the last 2 runs and the last 2 days
    assert pruned.runs == 2 and pruned.sessions == 2 * 3 * 2
    assert pruned.window == {"2": "outside the newest 2 runs", "2d": "older than 2 days"}[keep]
    kept_runs = runs[-2:]
    store.close()

    after_results, after_sessions, kept = _snapshot(db)
    assert after_results == before_results
    assert after_sessions == before_sessions  # statistics of every session, pruned or not
    for name, has_samples in kept.items():
        assert has_samples == any(name.startswith(run) for run in kept_runs), name
    with Store(db) as store:
        for run in kept_runs:
            for j in range(3):
                assert all(np.array_equal(a, b) for a, b in zip(
                    store.session_samples(f"{run}-{j}"), kept_samples[run][j], strict=True))
        assert store.session_samples(f"{runs[0]}-0")[0].size == 0
        assert store.pruned_sessions([f"{runs[0]}-0", f"{runs[-1]}-0"]) == 2
        # pruning again at the same horizon finds nothing more to drop
        assert store.prune_samples(keep).sessions == 0


def test_nothing_is_pruned_unasked_and_bad_horizons_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    store, runs = _history(db, runs=2)
    store.close()
    # opening, reporting sizes and compacting never drop samples
    assert main(["db", "stats", "--db", str(db)]) == 0
    assert main(["db", "vacuum", "--db", str(db)]) == 0
    assert all(_snapshot(db)[2].values())
    with Store(db) as store:
        for bad in ("-1", "d", "30x", "1.5d", ""):
            with pytest.raises(StoreError, match="--keep-samples-for"):
                store.prune_samples(bad)
        assert store.prune_samples("0").sessions == 2 * 3 * 2  # 0 runs: every run's samples
    assert main(["db", "stats", "--db", str(tmp_path / "none.db")]) == 2
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("keep", ["500000d", "10000000000000000000d", "10000000000000000000"])
def test_a_horizon_beyond_every_run_keeps_every_sample(tmp_path: Path, capsys, keep: str) -> None:
    # Found: `--keep-samples-for 500000d` (keep them all, a user meant) dropped the samples of
    # every run: the cutoff, 1369 years ago, was written "657-..." and sorted after every date.
    # Numbers beyond SQLite's integers or the platform's time_t ended in a traceback.
    db = tmp_path / "h.db"
    _history(db, runs=2)[0].close()
    assert main(["db", "prune", "--db", str(db), "--keep-samples-for", keep]) == 0
    assert "dropped the raw samples of 0 sessions in 0 runs" in capsys.readouterr().out
    assert all(_snapshot(db)[2].values())


def test_stats_match_direct_sql(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    store, runs = _history(db, runs=3)
    store.prune_samples("1")
    stats = store.stats()
    store.close()
    conn = sqlite3.connect(db)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    assert stats.file_bytes == page * conn.execute("PRAGMA page_count").fetchone()[0]
    assert stats.free_bytes == page * conn.execute("PRAGMA freelist_count").fetchone()[0]
    assert stats.tables["sessions"] == conn.execute(
        "SELECT SUM(pgsize) FROM dbstat WHERE name = 'sessions'").fetchone()[0]
    assert sum(stats.tables.values()) + stats.free_bytes == stats.file_bytes
    assert [r.run_id for r in stats.runs] == runs
    for r in stats.runs:
        where = "FROM sessions WHERE job_id IN (SELECT job_id FROM results WHERE run_id = ?)"
        assert r.measurements == conn.execute(
            "SELECT COUNT(*) FROM results WHERE run_id = ?", (r.run_id,)).fetchone()[0] == 3
        assert r.sessions == conn.execute(f"SELECT COUNT(*) {where}", (r.run_id,)).fetchone()[0]
        assert r.sessions_with_samples == conn.execute(
            f"SELECT COUNT(*) {where} AND samples IS NOT NULL", (r.run_id,)).fetchone()[0]
        assert r.sample_bytes == conn.execute(
            f"SELECT COALESCE(SUM(LENGTH(samples)), 0) {where}", (r.run_id,)).fetchone()[0]
        assert r.samples == conn.execute(
            f"SELECT COALESCE(SUM(n), 0) {where} AND samples IS NOT NULL", (r.run_id,)
        ).fetchone()[0]
    assert [r.sessions_with_samples for r in stats.runs] == [0, 0, 6]
    assert stats.runs[-1].samples == 3 * (50 + 60) + 2 * (0 + 1 + 2)


def test_vacuum_shrinks_the_file_after_a_prune(tmp_path: Path, capsys) -> None:
    db = tmp_path / "h.db"
    store, _ = _history(db, runs=6, jobs=4, sessions=3, n=5000)
    store.close()
    assert main(["db", "prune", "--db", str(db), "--keep-samples-for", "1"]) == 0
    assert "in 5 runs" in capsys.readouterr().out
    with Store(db) as store:
        stats = store.stats()
        assert stats.free_bytes > 0
        before, after = store.vacuum()
    assert after < before and after == db.stat().st_size
    assert after <= before - stats.free_bytes
    # --vacuum in the same command: nothing left to drop, nothing left to give back
    assert main(["db", "prune", "--db", str(db), "--keep-samples-for", "1", "--vacuum"]) == 0
    assert "compacted" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_sample_export_round_trips_exactly(tmp_path: Path, fmt: str) -> None:
    db = tmp_path / "h.db"
    store, runs = _history(db, runs=2)
    expected = [(f"{runs[0]}-{j}", s, i, int(v)) for j in range(3)
                for s, ns in enumerate(store.session_samples(f"{runs[0]}-{j}"))
                for i, v in enumerate(ns)]
    store.close()
    out = tmp_path / f"s.{fmt}"
    assert main(["export", "--db", str(db), "--run", runs[0], "--format", fmt, "--samples",
                 "--out", str(out)]) == 0
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.schema.names == list(SAMPLE_COLUMNS)
        assert pq.ParquetFile(out).num_row_groups == 3 * 2  # one per session: chunked
        got = list(zip(*(table.column(c).to_pylist() for c in SAMPLE_COLUMNS), strict=True))
    else:
        with out.open(newline="") as f:
            rows = list(csv.reader(f))
        assert tuple(rows[0]) == SAMPLE_COLUMNS
        got = [(j, int(s), int(i), int(v)) for j, s, i, v in rows[1:]]
    assert got == expected


def test_sample_export_skips_pruned_sessions_and_refuses_json(tmp_path: Path, capsys) -> None:
    db = tmp_path / "h.db"
    store, runs = _history(db, runs=2)
    store.prune_samples("1")
    newest = sum(s.size for j in range(3) for s in store.session_samples(f"{runs[1]}-{j}"))
    store.close()
    run_export(db, runs[0], "csv", table="samples")
    assert capsys.readouterr().out == ",".join(SAMPLE_COLUMNS) + "\n"
    run_export(db, runs[1], "csv", table="samples")
    assert len(capsys.readouterr().out.splitlines()) == newest + 1
    with pytest.raises(EdgebenchError, match="csv or parquet"):
        run_export(db, runs[1], "json", table="samples")


def test_a_pruned_run_still_reports(tmp_path: Path) -> None:
    store, run = demo_store(tmp_path / "d.db")
    full = run_report(tmp_path / "d.db", run, tmp_path / "full")
    assert store.prune_samples("0").sessions > 0
    store.close()
    pruned = run_report(tmp_path / "d.db", run, tmp_path / "pruned")
    # every table is the same: its figures come from stored rows, not from raw samples
    for table in sorted((full / "tables").glob("*.csv")):
        pd.testing.assert_frame_equal(pd.read_csv(table), pd.read_csv(pruned / "tables" /
                                                                       table.name))
    assert (full / "plots" / "latency_distributions.png").exists()
    assert not (pruned / "plots" / "latency_distributions.png").exists()
    html = (pruned / "index.html").read_text()
    assert "raw samples of 50 sessions of this run were pruned" in html
    assert "were pruned" not in (full / "index.html").read_text()


def _rows(db: Path, table: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
    conn.close()
    return rows


def test_delete_removes_a_run_whole_and_nothing_else(tmp_path: Path, capsys) -> None:
    db = tmp_path / "h.db"
    store, runs = _history(db, runs=3, kernels=["6.1", "6.1", "6.6"])
    for run in runs:  # a profile for one measurement of each run
        store.add_profile({"job_id": f"{run}-0", "status": "ok", "tool": "ort"},
                          [{"job_id": f"{run}-0", "rank": 1, "op_type": "Conv"}],
                          {"run_id": run, "job_id": f"{run}-0", "status": "ok"})
    store.close()
    before = {t: _rows(db, t) for t in ("runs", "results", "sessions", "profiles",
                                        "profile_ops", "fingerprints")}

    assert main(["db", "delete", "--db", str(db), runs[2], runs[0]]) == 0
    assert "deleted 2 runs" in capsys.readouterr().out
    gone = (runs[0], runs[2])
    for table, rows in before.items():
        after = _rows(db, table)
        if table == "fingerprints":
            # 6.6 ran in a deleted run only; 6.1 is still named by the sessions of runs[1]
            assert [json.loads(r[1]) for r in after] == [{"kernel": "6.1"}]
            assert len(rows) == 2
            continue
        # every row of the run kept is there, unchanged; none of the deleted runs' is
        assert after == [r for r in rows if not any(run in str(r[:2]) for run in gone)]
        assert len(after) < len(rows)
    with Store(db) as store:
        assert [r.run_id for r in store.runs()] == [runs[1]]
        assert len(store.sessions([f"{runs[1]}-{j}" for j in range(3)])) == 3 * 2


def test_delete_refuses_a_run_marked_running_and_unknown_runs(tmp_path: Path, capsys) -> None:
    db = tmp_path / "h.db"
    store, runs = _history(db, runs=2)
    store.begin_run("edgebench bench --suite s.yaml", None, ["pi5"], run_id=runs[1])  # running
    store.close()
    before = _snapshot(db)
    assert main(["db", "delete", "--db", str(db), runs[0], runs[1]]) == 2
    err = capsys.readouterr().err
    assert f"run {runs[1]} is marked running" in err and f"--resume {runs[1]}" in err
    assert main(["db", "delete", "--db", str(db), "no-such-run"]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
    assert _snapshot(db) == before  # a refused delete deletes nothing, not even the other run
    assert main(["db", "delete", "--db", str(db), "--force", "--vacuum", "latest"]) == 0
    assert "compacted" in capsys.readouterr().out
    with Store(db) as store:
        assert [r.run_id for r in store.runs()] == [runs[0]]


def test_delete_keeps_the_newest_runs_or_days_and_deletes_the_rest(tmp_path: Path,
                                                                    capsys) -> None:
    """Retention of whole runs for a farm: `db delete` could remove only runs named one by one,
    so a year of nightlies needed a script. `--keep-runs-for` takes what `db prune` takes."""
    db = tmp_path / "h.db"
    store, runs = _history(db, runs=5)  # a day and an hour apart, the newest now
    empty = store.begin_run("edgebench bench --model m.onnx", None, ["pi5"])
    store.finish_run(empty, "interrupted")  # measured nothing: takes no place among those kept
    store.close()
    assert main(["db", "delete", "--db", str(db), "--keep-runs-for", "2"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"deleted 3 runs (outside the newest 2 runs, {runs[0]} to {runs[2]}): 9 measurements, "
        "18 sessions with their samples and profiles")
    with Store(db) as store:
        assert [r.run_id for r in store.runs()] == [runs[3], runs[4], empty]
    assert main(["db", "delete", "--db", str(db), "--keep-runs-for", "1d"]) == 0
    assert f"deleted 1 run (older than 1 day, {runs[3]})" in capsys.readouterr().out
    assert main(["db", "delete", "--db", str(db), "--keep-runs-for", "1d"]) == 0
    assert capsys.readouterr().out.strip() == "no run older than 1 day: nothing deleted"
    with Store(db) as store:
        assert [r.run_id for r in store.runs()] == [runs[4], empty]
    before = _snapshot(db)
    for args, said in (
            (["--keep-runs-for", "0"], "--keep-runs-for 0: that keeps no run; delete the database "
                                       "file instead"),
            (["--keep-runs-for", "000d"], "that keeps no run"),
            (["--keep-runs-for", "30x"], "--keep-runs-for '30x': give a number of runs (30) or "
                                         "days (30d)"),
            ([], "db delete: give the runs to delete, or --keep-runs-for N|Nd"),
            ([runs[4], "--keep-runs-for", "1"], "(not both)")):
        assert main(["db", "delete", "--db", str(db), *args]) == 2, args
        assert said in capsys.readouterr().err, args
    assert _snapshot(db) == before


def test_delete_by_age_refuses_a_run_marked_running(tmp_path: Path, capsys) -> None:
    db = tmp_path / "h.db"
    store, runs = _history(db, runs=3)
    store.begin_run("edgebench bench --suite s.yaml", None, ["pi5"], run_id=runs[0])  # killed
    store.close()
    assert main(["db", "delete", "--db", str(db), "--keep-runs-for", "1"]) == 2
    assert f"run {runs[0]} is marked running" in capsys.readouterr().err
    assert main(["db", "delete", "--db", str(db), "--keep-runs-for", "1", "--force"]) == 0
    with Store(db) as store:
        assert [r.run_id for r in store.runs()] == [runs[2]]


def test_a_fingerprint_only_forgotten_sessions_named_goes_at_the_next_vacuum(
        tmp_path: Path) -> None:
    store, runs = _history(tmp_path / "h.db", runs=2, jobs=1, kernels=["6.1", "6.6"])
    with store:
        store.forget_sessions(f"{runs[1]}-0", [0, 1])  # the only sessions that ran on 6.6
        store.vacuum()
        kept = store.conn.execute("SELECT fingerprint FROM fingerprints").fetchall()
        assert [json.loads(r[0]) for r in kept] == [{"kernel": "6.1"}]


def test_a_run_that_measured_nothing_takes_no_place_among_the_runs_kept(tmp_path: Path) -> None:
    """A bench stopped before its first session leaves a run with no measurement; counted among
    the newest N, it kept its own nothing and dropped the samples of a run that had some."""
    store, runs = _history(tmp_path / "h.db", runs=2)
    with store:
        empty = store.begin_run("edgebench bench --model m.onnx", None, ["pi5"])
        store.finish_run(empty, "interrupted")
        assert store.prune_samples("1").sessions == 3 * 2  # the older measured run's only
        assert store.pruned_sessions([f"{runs[1]}-{j}" for j in range(3)]) == 0


def test_a_database_in_a_folder_that_is_not_there_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A mistyped --db path must not start a new database in a new folder; only the default
    database's own folder (results/) is made."""
    model = tmp_path / "none.onnx"
    assert main(["bench", "--db", str(tmp_path / "typo" / "r.db"), "--model", str(model)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"edgebench: error: {tmp_path / 'typo' / 'r.db'}: no folder {tmp_path / 'typo'} for a "
        "result database; make it first, or check the --db path")
    assert not (tmp_path / "typo").exists()
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--model", str(model)]) == 2  # said of the model, not of results/
    assert "none.onnx: model file not found" in capsys.readouterr().err
    check_folder(DEFAULT_DB)
