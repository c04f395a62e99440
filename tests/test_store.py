"""The SQLite store: schema and its upgrade, one transaction per session, compact exact samples,
concurrent creation, surviving a killed host."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from harness import results as results_mod
from harness.errors import StoreError
from harness.results import RESULT_FIELDS
from harness.store import SCHEMA_VERSION, Store, decode_samples, encode_samples
from tests.conftest import EDGEBENCH, REPO

FIXTURES = Path(__file__).parent / "fixtures" / "store"


def _session(job_id: str, session: int = 0, status: str = "ok") -> dict:
    return {"job_id": job_id, "session": session, "status": status}


def test_schema_version_and_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with Store(db) as store:
        run = store.begin_run("test", None, ["local"])
        row = {"run_id": run, "job_id": "a", "model": "m", "status": "ok", "stable": True,
               "lineage": [{"technique": "fp32"}], "latency_median_ms": 1.5, "sessions": 1}
        store.add_session(_session("a", 0), [3, 1, 2], row)
        # the second session updates the measurement's row in place
        store.add_session(_session("a", 1), [4, 5], dict(row, sessions=2))
        store.finish_run(run)
        rows = store.results([run])
        assert len(rows) == 1 and rows[0]["sessions"] == 2
        assert rows[0]["stable"] is True
        assert rows[0]["lineage"] == [{"technique": "fp32"}]
        assert rows[0]["harness_version"]
        assert [list(s) for s in store.session_samples("a")] == [[3, 1, 2], [4, 5]]
        assert store.samples("a").tolist() == [3, 1, 2, 4, 5]
        assert [s["session"] for s in store.sessions(["a"])] == [0, 1]
        assert store.resolve_run("latest") == run
        assert store.resolve_run(run[:10]) == run
        assert set(rows[0]) == set(RESULT_FIELDS)
        with pytest.raises(ValueError, match="unknown result fields"):
            store.add_result({"run_id": run, "job_id": "b", "nonsense": 1})
        with pytest.raises(StoreError, match="no run"):
            store.resolve_run("nope")
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_samples_are_exact_and_compact() -> None:
    rng = np.random.default_rng(0)
    # realistic latencies: ~1.2 ms with jitter, nanosecond resolution
    ns = (1.2e6 * rng.lognormal(0, 0.05, 100_000)).astype(np.int64)
    blob = encode_samples(ns)
    assert np.array_equal(decode_samples(blob), ns)
    assert len(blob) / ns.size <= 4.0  # bytes per sample (a row each used to cost ~20)
    extremes = np.array([0, 1, 2**62, 123456789], dtype=np.int64)
    assert np.array_equal(decode_samples(encode_samples(extremes)), extremes)


def test_schema_1_database_is_upgraded_in_place_losing_nothing(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    db.write_bytes((FIXTURES / "v1.db").read_bytes())
    old = sqlite3.connect(db)
    old.row_factory = sqlite3.Row
    v1_rows = [dict(r) for r in old.execute("SELECT * FROM results ORDER BY rowid")]
    v1_samples = {r["job_id"]: [s[0] for s in old.execute(
        "SELECT latency_ns FROM samples WHERE job_id = ? ORDER BY seq", (r["job_id"],))]
        for r in v1_rows}
    v1_runs = old.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    old.close()
    assert len(v1_rows) == 2 and all(v1_samples.values())
    with Store(db) as store:
        rows = store.results()
        assert len(store.runs()) == v1_runs
        assert [r["job_id"] for r in rows] == [r["job_id"] for r in v1_rows]
        for new, before in zip(rows, v1_rows, strict=True):
            assert store.samples(new["job_id"]).tolist() == v1_samples[new["job_id"]]
            for name in ("model", "status", "n", "latency_median_ms", "latency_p99_ms",
                         "peak_rss_mb", "device_fingerprint"):
                expected = before[name]
                if name == "device_fingerprint":
                    expected = json.loads(expected)
                assert new[name] == expected, name
            assert new["rss_runtime_mb"] == before["rss_before_mb"]
            assert new["legacy"] == {"throughput_ips": before["throughput_ips"],
                                     "stop_reason": before["stop_reason"]}
            assert new["sessions"] == 1 and "single_session" in new["flags"]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_processes_creating_one_database_at_once_all_succeed(tmp_path: Path) -> None:
    """Several processes open a database that does not exist yet, at the same moment."""
    db = tmp_path / "fresh.db"
    code = ("import sys, time\nfrom harness.store import Store\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
            "with Store(sys.argv[1]) as s:\n    s.begin_run('race', None, ['local'])\n")
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), str(start)], cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for _ in range(5)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, errors
    with Store(db) as store:
        assert len(store.runs()) == 5


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="schema version"):
        Store(db)
    # a reader is told to use a newer edgebench, not to upgrade it with this one, which cannot
    with pytest.raises(StoreError, match=r"newer than this edgebench reads .*the edgebench that "
                                         r"wrote it, or a newer one"):
        Store(db, readonly=True)


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "garbage.db"
    db.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StoreError, match="garbage.db"):
        Store(db)


def test_failed_insert_leaves_no_half_session(tmp_path: Path) -> None:
    with Store(tmp_path / "r.db") as store:
        run = store.begin_run("t", None, ["local"])
        row = {"run_id": run, "job_id": "a", "status": "ok", "sessions": 1}
        store.add_session(_session("a"), [1, 2], row)
        with pytest.raises(sqlite3.IntegrityError):  # the same session twice
            store.add_session(_session("a"), [5], dict(row, sessions=2))
        assert store.samples("a").tolist() == [1, 2]
        assert store.results()[0]["sessions"] == 1  # the row's update rolled back with it


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
    options = runner.BenchOptions(quick=True, sessions=1, settings={{"duration_s": 1.0}})
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


def test_schema_3_database_is_read_as_it_is_where_nothing_writes(tmp_path: Path) -> None:
    """Schema 4 only adds `runs.plan`: report, export and db stats (read-only) read a schema-3
    file without upgrading it, as on a share the farm writes and a laptop reads."""
    db = tmp_path / "v3.db"
    db.write_bytes((FIXTURES / "v2.db").read_bytes())
    with Store(db):  # upgraded to 5, then taken back to what schema 3 was
        pass
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE runs DROP COLUMN plan")
    for column in ("others_cpus", "fingerprint_sha256", "gpu_process_mb"):
        conn.execute(f"ALTER TABLE sessions DROP COLUMN {column}")
    conn.execute("DROP TABLE fingerprints")
    conn.execute("PRAGMA user_version=3")
    conn.close()
    before = db.read_bytes()
    with Store(db, readonly=True) as store:
        (run,) = store.runs()
        assert run.plan is None and store.resolve_run("latest") == run.run_id
        (row,) = store.results()
        assert [(s["others_cpus"], s["fingerprint"]) for s in store.sessions([row["job_id"]])] \
            == [(None, None)] * 2  # columns it has not: not measured
    for argv in (["export", "--format", "json"], ["db", "stats"],
                 ["report", "--out", str(tmp_path / "report")]):
        done = subprocess.run([*EDGEBENCH, *argv, "--db", str(db)], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (argv, done.stderr)
    assert db.read_bytes() == before  # not upgraded behind the reader's back


def test_schema_2_database_is_upgraded_in_place_losing_nothing(tmp_path: Path) -> None:
    """v2.db was written by the code before per-operator profiles (see fixtures/store/README)."""
    db = tmp_path / "v2.db"
    db.write_bytes((FIXTURES / "v2.db").read_bytes())
    old = sqlite3.connect(db)
    old.row_factory = sqlite3.Row
    assert old.execute("PRAGMA user_version").fetchone()[0] == 2
    v2_results = [dict(r) for r in old.execute("SELECT * FROM results ORDER BY rowid")]
    v2_sessions = [dict(r) for r in old.execute("SELECT * FROM sessions ORDER BY job_id, session")]
    v2_runs = [dict(r) for r in old.execute("SELECT * FROM runs ORDER BY rowid")]
    old.close()
    assert v2_results and len(v2_sessions) == 2
    Store(db).close()
    new = sqlite3.connect(db)
    new.row_factory = sqlite3.Row
    assert new.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    for table, before, order in (("runs", v2_runs, "rowid"), ("results", v2_results, "rowid"),
                                 ("sessions", v2_sessions, "job_id, session")):
        after = [dict(r) for r in new.execute(f"SELECT * FROM {table} ORDER BY {order}")]
        assert len(after) == len(before), table
        for a, b in zip(after, before, strict=True):
            assert {k: a[k] for k in b} == b, table  # every v2 value, byte for byte
            added = set(a) - set(b)
            assert added and all(a[k] is None for k in added), table  # not measured
    # a v2 bench recorded no plan: it cannot be resumed, and says so (tests/test_cli_bench.py)
    assert [r[0] for r in new.execute("SELECT plan FROM runs")] == [None] * len(v2_runs)
    new.close()
    with Store(db) as store:
        (row,) = store.results()
        job_id = row["job_id"]
        assert store.profiles([job_id]) == [] and row["timer"] is None
        # the upgraded file takes a profile like a new one
        profile = {"tool": "onnxruntime", "timed": True, "iterations": 1, "ops": [
            {"name": "MatMul_1", "op_type": "MatMul", "provider": "CPUExecutionProvider",
             "calls": 1, "time_ms": 0.5}]}
        prow, ops = results_mod.profile_rows(job_id, {"status": "ok", "profile": profile},
                                             started_at="t")
        store.add_profile(prow, ops, {**row, "placement": {"in_force": ["CPU"]}})
        assert store.profile_data(job_id) == profile
        assert store.profile_ops([job_id])[0]["share"] == 1.0
        assert store.results()[0]["placement"] == {"in_force": ["CPU"]}


def test_failed_upgrade_leaves_the_v2_file_as_it_was(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The upgrade is one transaction: an error half-way changes nothing."""
    import harness.store as store_mod

    db = tmp_path / "v2.db"
    db.write_bytes((FIXTURES / "v2.db").read_bytes())
    real = store_mod._profile_sql

    def broken(if_not_exists: bool = False) -> list[str]:
        return [*real(if_not_exists), "CREATE TABLE profiles (x)"]  # fails: exists already

    monkeypatch.setattr(store_mod, "_profile_sql", broken)
    with pytest.raises(StoreError, match="not a usable result database"):
        Store(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    columns = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    assert "placement" not in columns
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "profiles" not in tables


def test_schema_5_database_is_upgraded_in_place_with_no_host_isa(tmp_path: Path) -> None:
    """v5.db was written by the code before results kept the build host's ISA and the
    throughput's interval (see fixtures/store/README): read-only commands read it as it is, and
    a writer adds those columns, NULL in its rows, keeping every value."""
    db = tmp_path / "v5.db"
    db.write_bytes((FIXTURES / "v5.db").read_bytes())
    before = db.read_bytes()
    with Store(db, readonly=True) as store:
        (row,) = store.results()
        assert "host_isa" not in row and row["status"] == "ok"
    assert db.read_bytes() == before
    added = _upgraded_in_place(db, 5, ("runs", "results", "sessions", "fingerprints"))
    assert added == {"runs": set(), "sessions": set(), "fingerprints": set(), "results": {
        "host_isa", "throughput_ci95_low_ips", "throughput_ci95_high_ips"}}


def _upgraded_in_place(db: Path, version: int, tables: Sequence[str]) -> dict[str, set[str]]:
    """Open the schema-`version` database `db` as a writer does and check that every row of
    `tables` keeps every value, at today's schema version; the columns the upgrade added to
    each table (NULL in every old row)."""
    old = sqlite3.connect(db)
    old.row_factory = sqlite3.Row
    assert old.execute("PRAGMA user_version").fetchone()[0] == version
    before = {t: [dict(r) for r in old.execute(f"SELECT * FROM {t} ORDER BY rowid")]
              for t in tables}
    old.close()
    Store(db).close()
    new = sqlite3.connect(db)
    new.row_factory = sqlite3.Row
    assert new.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    added = {}
    for table, rows in before.items():
        after = [dict(r) for r in new.execute(f"SELECT * FROM {table} ORDER BY rowid")]
        assert [{k: a[k] for k in b} for a, b in zip(after, rows, strict=True)] == rows, table
        added[table] = {k for a in after for k in a} - {k for b in rows for k in b}
        assert all(a[k] is None for a in after for k in added[table]), table
    new.close()
    return added


def test_schema_4_database_is_upgraded_in_place_and_its_sessions_keep_reading(
        tmp_path: Path) -> None:
    """v4.db was written by the code before each session kept its own device fingerprint (see
    fixtures/store/README): read-only commands read it as it is; a writer upgrades it in one
    transaction, every value kept, and its sessions read with no fingerprint of their own, so
    that a resume rebuilds them with their measurement's, as before."""
    from harness import resume

    db = tmp_path / "v4.db"
    db.write_bytes((FIXTURES / "v4.db").read_bytes())
    before = db.read_bytes()
    with Store(db, readonly=True) as store:
        (row,) = store.results()
        job_id = row["job_id"]
        read_as_it_is = store.sessions([job_id])
    assert db.read_bytes() == before
    assert [s["fingerprint"] for s in read_as_it_is] == [None, None]
    assert [s["gpu_process_mb"] for s in read_as_it_is] == [None, None]

    _upgraded_in_place(db, 4, ("runs", "results", "sessions"))
    new = sqlite3.connect(db)
    new.row_factory = sqlite3.Row
    assert {k for r in new.execute("SELECT * FROM sessions") for k in r.keys()} >= {
        "fingerprint_sha256", "gpu_process_mb"}
    assert new.execute("SELECT COUNT(*) FROM fingerprints").fetchone()[0] == 0
    new.close()

    with Store(db) as store:
        sessions = store.sessions([job_id])
        assert [s["session"] for s in sessions] == [0, 1]
        assert [s["median_ms"] for s in sessions] == [s["median_ms"] for s in read_as_it_is]
        rebuilt = resume._result(sessions[1], row)
        assert rebuilt["fingerprint"] == row["device_fingerprint"]  # the row's, as before
        # a session stored now keeps its own, next to the old ones
        fingerprint = dict(row["device_fingerprint"], kernel="6.8.0-new")
        store.add_session({**_session(job_id, 2), "fingerprint": fingerprint}, [5], row)
        assert [s["fingerprint"] for s in store.sessions([job_id])] == [None, None, fingerprint]


def test_sessions_keep_their_own_fingerprint_once_per_device(tmp_path: Path) -> None:
    """Each session's fingerprint is stored once for all the sessions that share it, and reads
    back whole with each; the measurement's row changing later changes none of them."""
    a = {"kernel": "6.1.0", "isa": "x86 avx2", "runtimes": {"onnxruntime": "1.20.0"}}
    b = dict(a, kernel="6.8.0")
    with Store(tmp_path / "r.db") as store:
        run = store.begin_run("test", None, ["local"])
        row = {"run_id": run, "job_id": "j", "status": "ok", "device_fingerprint": a}
        for session, fingerprint in enumerate((a, dict(reversed(a.items())), b, a)):
            store.add_session({**_session("j", session), "fingerprint": fingerprint,
                               "gpu_process_mb": 100.0 + session}, [1], row)
        store.add_session(_session("j", 4, "failed"), [], row)  # it probed nothing
        store.add_result({**row, "device_fingerprint": b})
        sessions = store.sessions(["j"])
        assert [s["fingerprint"] for s in sessions] == [a, a, b, a, None]
        assert [s["gpu_process_mb"] for s in sessions] == [100.0, 101.0, 102.0, 103.0, None]
        assert store.conn.execute("SELECT COUNT(*) FROM fingerprints").fetchone()[0] == 2


def test_runs_follow_the_order_they_were_begun_whatever_the_clock(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """Found in an audit of a farm: a host whose clock was set back (booted without NTP) began
    a nightly dated 400 days before the twelve it followed; ordered by start time, it was not
    `latest`, `--baseline previous` found no earlier nightly for it, and its regression passed
    as not gated. Runs follow one another in the order they were begun."""
    import harness.store as store_mod
    from harness.farm.nightly import nightly_ids
    from tests.test_report_synthetic import add_job

    clock = iter(["2026-11-01T01:30:00+00:00", "2026-11-02T01:30:00+00:00",
                  "2025-10-29T01:30:00+00:00"])
    monkeypatch.setattr(store_mod, "utc_now", lambda: next(clock))
    with Store(tmp_path / "x.db") as store:
        ids = [store.begin_run("edgebench nightly", "s.yaml", ["pi5"], run_id=f"nightly-{i}")
               for i in range(3)]
        for run in ids:
            add_job(store, run, "net")
        assert [r.run_id for r in store.runs()] == ids
        assert store.resolve_run("latest") == ids[2]
        assert nightly_ids(store, ids[2]) == ids
        # the trend's history too: its rings compare each run with the one begun before it
        from harness.report import frame
        from harness.report.nightly import history

        trend = frame.in_run_order(history(store, ids, ["pi5"]))
        assert list(dict.fromkeys(trend["run_id"])) == ids
        pruned = store.prune_samples("2")  # the two begun last keep their samples
        assert store.pruned_sessions([store.results([ids[0]])[0]["job_id"]]) > 0
        assert pruned.runs == 1
