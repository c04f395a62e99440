"""The SQLite store: schema version, one transaction per job, surviving a killed host."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import StoreError
from harness.store import RESULT_FIELDS, SCHEMA_VERSION, Store
from tests.conftest import EDGEBENCH, REPO


def test_schema_version_and_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with Store(db) as store:
        run = store.begin_run("test", None, ["local"])
        store.add_result({"run_id": run, "job_id": "a", "model": "m", "status": "ok",
                          "stable": True, "lineage": [{"technique": "fp32"}],
                          "latency_median_ms": 1.5}, [3, 1, 2])
        store.finish_run(run)
        rows = store.results([run])
        assert len(rows) == 1
        assert rows[0]["stable"] is True
        assert rows[0]["lineage"] == [{"technique": "fp32"}]
        assert rows[0]["harness_version"]
        assert store.samples("a") == [3, 1, 2]
        assert store.resolve_run("latest") == run
        assert store.resolve_run(run[:10]) == run
        assert set(rows[0]) == set(RESULT_FIELDS)
        with pytest.raises(ValueError, match="unknown result fields"):
            store.add_result({"run_id": run, "job_id": "b", "nonsense": 1})
        with pytest.raises(StoreError, match="no run"):
            store.resolve_run("nope")
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="schema version"):
        Store(db)


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "garbage.db"
    db.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StoreError, match="garbage.db"):
        Store(db)


def test_failed_insert_leaves_no_half_job(tmp_path: Path) -> None:
    with Store(tmp_path / "r.db") as store:
        run = store.begin_run("t", None, ["local"])
        store.add_result({"run_id": run, "job_id": "a", "status": "ok"}, [1, 2])
        with pytest.raises(sqlite3.IntegrityError):
            store.add_result({"run_id": run, "job_id": "a", "status": "ok"}, [5])  # duplicate
        assert store.samples("a") == [1, 2]
        assert len(store.results()) == 1


def test_killed_run_keeps_finished_jobs(tmp_path: Path, tiny_onnx: Path) -> None:
    """SIGKILL the host mid-run: every job stored before the kill is intact and readable."""
    db = tmp_path / "kill.db"
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "slow.yaml").write_text(
        "name: slow\nkind: local\ntransport: local\nruntimes: [onnxruntime]\nthreads: 1\n")
    models = []
    for i in range(6):
        target = tmp_path / f"m{i}.onnx"
        target.write_bytes(tiny_onnx.read_bytes())
        models.append(target)
    # One run of six jobs, each kept busy for a second, in a child process we can kill.
    code = f"""
import sys
from pathlib import Path
from harness import runner
from harness.artifacts import from_model_file
from harness.config import load_profile
from harness.store import Store
profile = load_profile("slow", Path({str(devices)!r}))
arts = [from_model_file(Path(p)) for p in {[str(m) for m in models]!r}]
jobs = runner.plan_jobs(arts, [profile], runner.BenchOptions(quick=True))
with Store({str(db)!r}) as store:
    options = runner.BenchOptions(quick=True, settings={{"min_duration_s": 1.0}})
    runner.run_plan(store, jobs, options, command="kill-test")
"""
    log = tmp_path / "host.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=log_file,
                                stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and stored < 2:
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    stored = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                pass
        assert proc.poll() is None, log.read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert stored >= 2
    with Store(db) as store:
        rows = store.results()
        assert 2 <= len(rows) < 6
        for row in rows:
            assert row["status"] == "ok"
            assert len(store.samples(row["job_id"])) == row["n"]
        (run,) = store.runs()
        assert run.status == "running"  # it never finished, and the store says so
    # the CLI still reads the store of a killed run
    out = subprocess.run([*EDGEBENCH, "export", "--format", "json", "--db", str(db)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
