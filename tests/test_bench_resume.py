"""`edgebench bench --resume RUN_ID`: an interrupted bench taken up through the real CLI on the
local device, measuring only what it had not stored; and every command that must not resume it."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness import bench as bench_mod
from harness import resume
from harness.errors import EdgebenchError
from harness.runner import BenchOptions
from harness.store import Store, fingerprint_sha256
from tests.conftest import EDGEBENCH, REPO, make_tiny_onnx, rows, run_cli, wait_for_sessions

SESSIONS = "12"  # a Ctrl-C twice after a few stored sessions leaves some to measure, even late


def start(db: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*EDGEBENCH, "bench", "--quick", "--db", str(db), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str], sig: signal.Signals) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    return err


def interrupted(db: Path, sessions: int, *args: str, device: str = "local",
                sig: signal.Signals = signal.SIGTERM) -> str:
    """Run bench with `args` until `sessions` sessions of `device` are stored, then send it
    `sig`; its stderr."""
    proc = start(db, *args)
    wait_for_sessions(db, device, sessions, proc)
    return stop(proc, sig)


def stored(db: Path) -> list[tuple[str, int, str]]:
    return rows(db, "SELECT job_id, session, started_at FROM sessions ORDER BY job_id, session")


def set_fingerprint(db: Path, fingerprint: dict[str, Any], where: str, *params: Any) -> None:
    """Give the stored sessions `where` says this fingerprint, as if they had run on a device
    that differed so (an upgrade, a reboot into another kernel)."""
    key, text = fingerprint_sha256(fingerprint)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT OR IGNORE INTO fingerprints (sha256, fingerprint) VALUES (?, ?)",
                     (key, text))
        conn.execute(f"UPDATE sessions SET fingerprint_sha256 = ? WHERE {where}", (key, *params))
    conn.close()


def test_an_interrupted_bench_resumes_twice_measuring_each_session_once(
        tmp_path: Path, tiny_onnx: Path) -> None:
    db = tmp_path / "r.db"
    args = ("--model", str(tiny_onnx), "--sessions", SESSIONS, "--threads", "1")
    interrupted(db, 2, *args)
    ((run_id, status),) = rows(db, "SELECT run_id, status FROM runs")
    assert status == "interrupted"
    before = stored(db)
    assert 2 <= len(before) < int(SESSIONS)

    # a resumed run interrupted in its turn; its run id as a prefix, like other run ids
    err = interrupted(db, len(before) + 2, *args, "--resume", run_id[:10], sig=signal.SIGINT)
    assert (f"resuming run {run_id}: {len(before)} of {SESSIONS} sessions stored, measuring "
            f"{int(SESSIONS) - len(before)}") in err
    middle = stored(db)
    assert set(before) < set(middle) and len(middle) < int(SESSIONS)
    assert rows(db, "SELECT run_id, status FROM runs") == [(run_id, "interrupted")]

    third = run_cli("bench", "--quick", "--db", str(db), *args, "--resume", "latest")
    assert third.returncode == 0, third.stderr
    assert f"{len(middle)} of {SESSIONS} sessions stored" in third.stderr
    after = stored(db)
    assert set(middle) <= set(after)  # no stored session measured again: same numbers, times
    assert [s for _, s, _ in after] == list(range(int(SESSIONS)))  # each planned session once
    assert rows(db, "SELECT run_id, status FROM runs") == [(run_id, "finished")]
    with Store(db) as store:
        (row,) = store.results([run_id])
        sessions = store.sessions([row["job_id"]])
        assert row["status"] == "ok"
        assert row["sessions"] == row["sessions_planned"] == int(SESSIONS)
        assert row["n"] == sum(s["n"] for s in sessions) == len(store.samples(row["job_id"]))
        assert row["threads"] == 1 and row["settings"]["duration_s"] == 0.2
        assert "mixed_sessions" not in row["flags"]  # one machine, one runtime throughout
    assert f"{SESSIONS}/{SESSIONS}" in third.stdout  # the summary table: the whole measurement

    # its results are those of any run: compared with an uninterrupted one, measurement by
    # measurement
    fresh = run_cli("bench", "--quick", "--db", str(db), *args)
    assert fresh.returncode == 0, fresh.stderr
    compared = run_cli("compare", run_id, "latest", "--db", str(db))
    assert compared.returncode == 0, compared.stderr
    assert "tiny" in compared.stdout and "only in" not in compared.stdout


def test_what_cannot_be_resumed_is_refused_in_one_line_before_anything_runs(
        tmp_path: Path, tiny_onnx: Path) -> None:
    db = tmp_path / "r.db"
    device = tmp_path / "dev.yaml"
    device.write_text("name: dev\nruntimes: [onnxruntime]\nthreads: 1\n")
    # sessions enough that the run is still measuring when it is stopped, however slow the
    # machine is to answer the `--resume` beside it (30 ran out once under a loaded CI)
    args = ["--model", str(tiny_onnx), "--device", str(device), "--sessions", "300"]
    proc = start(db, *args)
    wait_for_sessions(db, "dev", 1, proc)
    (run_id,) = [r for (r,) in rows(db, "SELECT run_id FROM runs")]
    busy = run_cli("bench", "--quick", "--db", str(db), *args, "--resume", run_id)
    assert busy.returncode != 0
    assert f"run {run_id} is still being measured by process {proc.pid}" in busy.stderr
    stop(proc, signal.SIGINT)
    finished = run_cli("bench", "--quick", "--db", str(db), "--model", str(tiny_onnx),
                       "--sessions", "1")
    assert finished.returncode == 0, finished.stderr
    with Store(db) as store:
        finished_id = store.runs()[-1].run_id
        store.begin_run("edgebench nightly --farm f.yaml --suite s.yaml", "s.yaml", ["dev"],
                        run_id="nightly-x")
        store.begin_run("edgebench bench --model m.onnx", None, ["dev"], run_id="old-x")  # no plan
    other = make_tiny_onnx(tmp_path / "other.onnx")
    before = stored(db)

    def refused(*extra: str, given: list[str] = args) -> str:
        proc = run_cli("bench", "--quick", "--db", str(db), *given, *extra)
        assert proc.returncode != 0
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("edgebench: error: "), proc.stderr
        return lines[0]

    resume = ["--resume", run_id]
    assert "no run 'nope'" in refused("--resume", "nope")
    assert "run nightly-x is a nightly" in refused("--resume", "nightly-x")
    assert "nightly --id nightly-x" in refused("--resume", "nightly-x")
    assert f"run {finished_id} finished" in refused("--resume", finished_id)
    assert "run old-x cannot be resumed" in refused("--resume", "old-x")
    line = refused(*resume, given=["--model", str(other), *args[2:]])
    assert f"run {run_id} measured --model {tiny_onnx}" in line and "other.onnx" in line
    assert f"run {run_id} ran on dev; this command gives local" in refused(
        *resume, given=args[:2] + args[4:])
    assert "with 300 sessions per measurement; this command gives 2 sessions" in refused(
        *resume, given=args[:4])
    assert "--threads 2" in refused(*resume, "--threads", "2")
    assert "no --timed-scope; this command gives --timed-scope end_to_end" in refused(
        *resume, "--timed-scope", "end_to_end")
    assert "this command gives --runtime onnxruntime" in refused(*resume, "--runtime",
                                                                 "onnxruntime")
    assert "no --profile; this command gives --profile" in refused(*resume, "--profile")
    no_quick = run_cli("bench", "--db", str(db), *args, *resume)
    assert no_quick.returncode != 0
    assert f"run {run_id} was measured with --quick; this command gives no --quick" in \
        no_quick.stderr
    device.write_text("name: dev\nruntimes: [onnxruntime]\nthreads: 2\n")
    line = refused(*resume)
    assert "tiny on onnxruntime on dev would be measured otherwise" in line
    assert "options.threads: 1 then, 2 now" in line
    device.write_text("name: dev\nruntimes: [onnxruntime]\nthreads: 1\n")
    make_tiny_onnx(tiny_onnx, seed=1)  # rebuilt in place: other weights, another sha256
    line = refused(*resume)
    assert f"run {run_id}: model tiny changed since the run measured it" in line

    assert stored(db) == before  # nothing was measured
    assert rows(db, "SELECT status FROM runs WHERE run_id = ?", run_id) == [("interrupted",)]


def test_a_suite_edited_since_the_run_began_is_refused_before_the_build(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("models: []\n")
    options = BenchOptions(quick=True)
    what = bench_mod.what_record(suite, None)
    record = {"version": bench_mod.PLAN_VERSION, "what": what,
              "options": bench_mod.options_record(options, None), "jobs": []}
    with Store(tmp_path / "r.db") as store:
        store.begin_run("edgebench bench --suite s.yaml", str(suite), ["local"], run_id="r-1",
                        plan=record)
        store.finish_run("r-1", "interrupted")
        assert bench_mod.check_run(store, "r-1", what, ["local"],
                                   bench_mod.options_record(options, None)).run_id == "r-1"
        suite.write_text("models: [x]\n")
        with pytest.raises(Exception, match=r"run r-1: suite .*s\.yaml changed since the run "
                                            r"began \(sha256 [0-9a-f]{12} then"):
            bench_mod.check_run(store, "r-1", bench_mod.what_record(suite, None), ["local"],
                                bench_mod.options_record(options, None))


def test_a_run_stopped_before_its_profile_session_resumes_with_the_profile_alone(
        tmp_path: Path, tiny_onnx: Path) -> None:
    """Killed after its timed sessions, before `--profile`'s session: the resume measures no
    session again and profiles the measurement, whose sessions it knows only from the store."""
    db = tmp_path / "r.db"
    args = ("bench", "--quick", "--db", str(db), "--model", str(tiny_onnx), "--sessions", "2",
            "--profile")
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    ((run_id,),) = rows(db, "SELECT run_id FROM runs")
    with Store(db) as store:
        (job_id,) = [r["job_id"] for r in store.results([run_id])]
        store.conn.execute("DELETE FROM profile_ops")
        store.conn.execute("DELETE FROM profiles")
        store.conn.execute("UPDATE runs SET status = 'running'")  # as a killed process leaves it
    before = stored(db)

    again = run_cli(*args, "--resume", run_id)
    assert again.returncode == 0, again.stderr
    assert f"resuming run {run_id}: 2 of 2 sessions stored, measuring 0 and 1 profile" in \
        again.stderr
    assert stored(db) == before
    assert rows(db, "SELECT job_id FROM profiles") == [(job_id,)]
    assert rows(db, "SELECT status FROM runs") == [("finished",)]
    with Store(db) as store:
        (row,) = store.results([run_id])
        assert row["sessions"] == 2 and row["placement"]


def test_a_run_resumed_on_a_changed_device_says_so_at_once_and_is_flagged(
        tmp_path: Path, tiny_onnx: Path) -> None:
    """Sessions stored before the interruption and sessions measured after it are one
    measurement: where the device changed in between (here its kernel, written into the stored
    sessions as an upgrade and reboot would have changed it), the resume says so in one line on
    stderr as soon as its first session shows it, not refusing it, and the row says so too."""
    db = tmp_path / "r.db"
    sessions = 10
    args = ("--model", str(tiny_onnx), "--sessions", str(sessions), "--threads", "1")
    interrupted(db, 1, *args)
    with Store(db) as store:
        (row,) = store.results()
    kernel = row["device_fingerprint"]["kernel"]
    set_fingerprint(db, dict(row["device_fingerprint"], kernel="5.15.0-old"), "1")
    resumed = start(db, *args, "--resume", "latest")
    assert resumed.stderr is not None
    said, measured_then = "", 0
    for line in resumed.stderr:
        if "warning" in line:
            said, measured_then = line, len(stored(db))
            break
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    assert said == (f"edgebench: warning: local changed since the sessions run {row['run_id']} "
                    f"stored (kernel 5.15.0-old -> {kernel}); measurements with sessions from "
                    "before and after will be flagged mixed_sessions\n")
    assert measured_then < sessions  # while measuring, not afterwards
    assert "warning" not in err  # once, though every session after shows it
    with Store(db) as store:
        (row,) = store.results()
    assert row["sessions"] == sessions and "mixed_sessions" in row["flags"]


def test_a_device_changed_and_changed_back_across_two_resumes_is_told_and_flagged(
        tmp_path: Path, tiny_onnx: Path) -> None:
    """A -> B -> A: the first run's sessions ran on kernel A, the first resume's on B (written
    into the sessions it stored, as a reboot into another kernel would have made them), the
    second resume's on A again. Each stored session is rebuilt with its own fingerprint, so the
    second resume says the device changed (B -> A) and the row is flagged `mixed_sessions`, as
    a run that never stopped would have been; the stored sessions' own GPU memory counts in the
    row as theirs did (this CPU measures none: the new sessions add nothing to it)."""
    db = tmp_path / "r.db"
    sessions = 12
    args = ("--model", str(tiny_onnx), "--sessions", str(sessions), "--threads", "1")
    interrupted(db, 2, *args)
    on_a = [s for _, s, _ in stored(db)]
    interrupted(db, len(on_a) + 2, *args, "--resume", "latest")
    on_b = [s for _, s, _ in stored(db) if s not in on_a]
    assert on_b and len(on_a) + len(on_b) < sessions
    with Store(db) as store:
        (row,) = store.results()
    a = row["device_fingerprint"]
    set_fingerprint(db, dict(a, kernel="5.15.0-b"),
                    f"session IN ({', '.join(map(str, on_b))})")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE sessions SET gpu_process_mb = 100 + session")
    conn.close()

    third = run_cli("bench", "--quick", "--db", str(db), *args, "--resume", "latest")
    assert third.returncode == 0, third.stderr
    said = [line for line in third.stderr.splitlines() if "warning" in line]
    assert said == [f"edgebench: warning: local changed since the sessions run {row['run_id']} "
                    f"stored (kernel 5.15.0-b -> {a['kernel']}); measurements with sessions "
                    "from before and after will be flagged mixed_sessions"]
    with Store(db) as store:
        (row,) = store.results()
        kernels = [s["fingerprint"]["kernel"] for s in store.sessions([row["job_id"]])]
    assert kernels == [a["kernel"]] * len(on_a) + ["5.15.0-b"] * len(on_b) + [a["kernel"]] * (
        sessions - len(on_a) - len(on_b))
    assert row["sessions"] == sessions and "mixed_sessions" in row["flags"]
    assert row["device_fingerprint"] == a  # session 0's, as in a run that never stopped
    assert row["gpu_process_mb"] == np.median([100 + s for s in on_a + on_b])


def test_a_runtime_upgraded_between_sessions_is_named_once_by_the_warning() -> None:
    """The runtime's version is in the fingerprint too (`runtimes.NAME`): the warning names it
    once, by the runtime's name; temperatures and clocks are no change of the device."""
    from harness.artifacts import Artifact
    from harness.config import DeviceProfile
    from harness.results import session_changes
    from harness.runner import PlannedJob

    def session(version: str, temp: float) -> dict[str, object]:
        return {"status": "ok", "runtime_version": version,
                "fingerprint": {"kernel": "6.8.0", "runtimes": {"tflite": version},
                                "cpu_temp_c": temp}}

    job = PlannedJob("j", DeviceProfile(name="pi5", kind="rpi"),
                     Artifact("m", Path("m.tflite"), "tflite", "0" * 64, 1), "tflite")
    changes = session_changes(session("2.2.0", 40.0), session("2.3.0", 71.5))
    assert [key for key, _, _ in changes] == ["runtime_version", "runtimes.tflite"]
    line = resume.change_warning("r-1", job, changes)
    assert "(tflite 2.2.0 -> 2.3.0)" in line and line.startswith(
        "edgebench: warning: pi5 changed since the sessions run r-1 stored")
    assert session_changes(session("2.3.0", 40.0), session("2.3.0", 71.5)) == []


def _device_with_an_accelerator(tmp_path: Path) -> Path:
    """The local machine with ONNX Runtime asked for its Azure execution provider before the
    CPU's: the sessions say an accelerator is in force, and the profile finds every operator on
    the CPU (`cpu_fallback`), as a CUDA provider that took nothing would."""
    device = tmp_path / "azure.yaml"
    device.write_text("name: azure\nkind: local\ntransport: local\nruntimes: [onnxruntime]\n"
                      "threads: 1\nruntime_options:\n  onnxruntime:\n"
                      "    providers: [AzureExecutionProvider, CPUExecutionProvider]\n")
    return device


def _lost(row: dict[str, object], before: dict[str, object]) -> list[str]:
    """The columns `before` had that `row` lost."""
    return sorted(k for k, v in before.items() if v is not None and row.get(k) is None)


def test_a_resumed_row_keeps_its_profiles_placement_and_session_order(
        tmp_path: Path, tiny_onnx: Path) -> None:
    """A bench with --profile whose session 1 was lost with the connection (a failure of the
    transport, measured again by a resume) after its profile was stored: the resume measures
    session 1 alone and rebuilds the row from the stored sessions and profile, which gives it
    its placement (all on the CPU: `cpu_fallback`) and accelerator as before; the sessions are
    in their order (the row's state after is the last session's)."""
    db = tmp_path / "r.db"
    device = _device_with_an_accelerator(tmp_path)
    args = ("bench", "--quick", "--db", str(db), "--model", str(tiny_onnx), "--device",
            str(device), "--sessions", "3", "--profile")
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    with Store(db) as store:
        (before,) = store.results()
        assert "cpu_fallback" in before["flags"] and before["accelerator"]  # what is at stake
        store.conn.execute("UPDATE sessions SET status = 'failed', error_kind = 'transport', "
                           "error_message = 'connection lost' WHERE session = 1")
        store.conn.execute("UPDATE runs SET status = 'incomplete'")  # as `finish` leaves it
    profile = rows(db, "SELECT * FROM profiles")

    again = run_cli(*args, "--resume", str(before["run_id"]))
    assert again.returncode == 0, again.stderr
    assert "2 of 3 sessions stored, measuring 1\n" in again.stderr  # no profile again
    assert rows(db, "SELECT * FROM profiles") == profile
    with Store(db) as store:
        (row,) = store.results()
        assert [s["status"] for s in store.sessions([row["job_id"]])] == ["ok"] * 3
    assert row["placement"] == before["placement"]
    assert "cpu_fallback" in row["flags"]
    for name in ("accelerator", "timer", "device_fingerprint", "runtime_options", "settings",
                 "state_before", "state_after", "status", "sessions"):
        assert row[name] == before[name], name
    assert _lost(row, before) == []


def test_a_row_resumed_without_a_profile_keeps_its_sessions_placement(
        tmp_path: Path, tiny_onnx: Path) -> None:
    """Without --profile the sessions give the row its placement and accelerator: a resume
    that rebuilds the row from a stored session keeps them, with every other column the row had
    when the bench was stopped."""
    db = tmp_path / "r.db"
    device = _device_with_an_accelerator(tmp_path)
    args = ("--model", str(tiny_onnx), "--device", str(device), "--sessions", "4")
    interrupted(db, 1, *args, device="azure")
    with Store(db) as store:
        (before,) = store.results()
    assert before["placement"] and before["accelerator"]  # what is at stake
    done = run_cli("bench", "--quick", "--db", str(db), *args, "--resume", "latest")
    assert done.returncode == 0, done.stderr
    with Store(db) as store:
        (row,) = store.results()
    assert row["sessions"] == 4
    for name in ("placement", "accelerator", "timer", "device_fingerprint", "state_before"):
        assert row[name] == before[name], name
    assert _lost(row, before) == []


def test_resume_state_reads_the_stored_sessions_and_profiles_once(
        tmp_path: Path, tiny_onnx: Path) -> None:
    """What a resume finds (sessions to forget, measurements left, the sessions and profile to
    rebuild rows from) comes of one read of the session rows and one of the profile rows, as
    the statements SQLite runs show; each measurement taken up reads its samples and its
    profile's data once more, and nothing else is read twice."""
    import re

    from harness.artifacts import from_model_file
    from harness.config import load_profile

    db = tmp_path / "r.db"
    done = run_cli("bench", "--quick", "--db", str(db), "--model", str(tiny_onnx), "--sessions",
                   "2", "--profile")
    assert done.returncode == 0, done.stderr
    options = BenchOptions(quick=True, sessions=2, profile=True)
    with Store(db) as store:
        run_id = store.runs()[-1].run_id
        store.conn.execute("UPDATE sessions SET status = 'failed', error_kind = 'transport' "
                           "WHERE session = 1")
        plan = bench_mod.plan_bench([from_model_file(tiny_onnx)], [load_profile("local")],
                                    options, run_id, bench_mod.what_record(None, tiny_onnx),
                                    None)
        (job_id,) = [j.job_id for j in plan.jobs]
        statements: list[str] = []
        store.conn.set_trace_callback(statements.append)
        state = bench_mod.resume_state(store, plan)
        store.conn.set_trace_callback(None)

    def read(columns: str, table: str) -> str:
        return f"{table} {columns if columns in ('samples', 'data') else 'rows'}"

    reads = [re.fullmatch(r"\s*SELECT (?:.*, )?(.*?) FROM (\w+) .*", s, re.S) for s in statements]
    what = sorted(read(m[1], m[2]) for m in reads if m)
    assert what == ["profiles data", "profiles rows", "results rows", "sessions rows",
                    "sessions samples"], statements
    # ... and what it read is what the store holds
    assert [j.job_id for j in state.todo] == [job_id] and state.profiled == {job_id}
    assert [s.session for s in state.stored[job_id]] == [0]
    assert state.profiles[job_id]["profile"]["placement"]
    assert (state.sessions_stored, state.sessions_left, state.profiles_left) == (1, 1, 0)
    assert rows(db, "SELECT session FROM sessions") == [(0,)]  # the lost one is forgotten


def test_a_resumed_nightly_device_reads_its_stored_sessions_once_before_measuring(
        tmp_path: Path, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A nightly's device taken up again (`nightly --id`) finds what to forget, what is left
    and the sessions to rebuild rows from in one read of its session rows, as `bench --resume`
    does, and reads them once more after measuring, to see what is still missing. Here on the
    local device (no labgrid place), its session 1 lost with the connection."""
    import threading

    from harness.artifacts import from_model_file
    from harness.config import load_profile
    from harness.farm import nightly
    from harness.farm.farmfile import Farm

    db = tmp_path / "r.db"
    options = BenchOptions(quick=True, sessions=2, threads=1)
    farm = Farm(tmp_path / "farm.yaml", "none", (load_profile("local"),), retries=0)
    plan = nightly.plan_nightly(farm, [from_model_file(tiny_onnx)], options, "nightly-x",
                                "s.yaml", "edgebench nightly --id nightly-x")
    said: list[str] = []

    def device() -> nightly.DeviceOutcome:
        outcome = nightly.DeviceOutcome("local", None)
        nightly.run_device(db, plan, farm.devices[0], farm, outcome, threading.Event(),
                           said.append)
        return outcome

    with Store(db) as store:
        nightly.begin(store, plan, farm)
    assert device().status == "ok"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE sessions SET status = 'failed', error_kind = 'transport' "
                     "WHERE session = 1")
    conn.close()
    reads: list[list[str]] = []
    real = Store.sessions

    def counted(store: Store, job_ids: Any) -> list[dict[str, Any]]:
        reads.append(list(job_ids))
        return real(store, job_ids)

    monkeypatch.setattr(Store, "sessions", counted)
    outcome = device()
    assert (outcome.status, outcome.sessions_run) == ("ok", 1), outcome
    assert reads == [[plan.jobs[0].job_id]] * 2  # before measuring, and after
    assert rows(db, "SELECT session, status FROM sessions") == [(0, "ok"), (1, "ok")]


def test_a_run_whose_samples_were_pruned_is_refused_before_anything_runs(
        tmp_path: Path, tiny_onnx: Path) -> None:
    """Found: `db prune --keep-samples-for 0`, then `bench --resume RUN` gave a row of 6
    sessions whose n and pooled p50-p99, mean and std were of the 4 new sessions' samples only,
    beside a median of all 6: the row contradicted its own sessions. Refused instead, in one line
    naming the run and why, before anything is measured."""
    db = tmp_path / "r.db"
    args = ("--model", str(tiny_onnx), "--sessions", SESSIONS, "--threads", "1")
    interrupted(db, 2, *args)
    ((run_id,),) = rows(db, "SELECT run_id FROM runs")
    pruned = run_cli("db", "prune", "--keep-samples-for", "0", "--db", str(db))
    assert pruned.returncode == 0, pruned.stderr
    before = stored(db)
    with Store(db) as store:
        (job_id,) = [j for (j,) in rows(db, "SELECT DISTINCT job_id FROM sessions")]
        assert store.pruned_sessions([job_id]) == len(before) >= 2

    proc = run_cli("bench", "--quick", "--db", str(db), *args, "--resume", run_id)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        f"edgebench: error: run {run_id} cannot be resumed: the raw samples of {len(before)} "
        "stored sessions of tiny on onnxruntime on local were pruned (`edgebench db prune`), "
        "and a measurement's pooled figures (n, percentiles, mean) need every session's "
        "samples; bench it anew without --resume"]
    assert stored(db) == before  # nothing was measured
    assert rows(db, "SELECT status FROM runs") == [("interrupted",)]

    # the nightly's way in, the sessions read back for a resume, refuses them too
    from harness.artifacts import from_model_file
    from harness.config import load_profile

    options = BenchOptions(quick=True, sessions=int(SESSIONS), threads=1)
    with Store(db) as store:
        plan = bench_mod.plan_bench([from_model_file(tiny_onnx)], [load_profile("local")],
                                    options, run_id, bench_mod.what_record(None, tiny_onnx),
                                    None)
        assert [j.job_id for j in plan.jobs] == [job_id]
        sessions = ", ".join(str(s) for _, s, _ in before)
        with pytest.raises(EdgebenchError, match=rf"run {run_id}: tiny on onnxruntime on local "
                                                 rf"cannot be resumed: .* {sessions} were pruned"):
            resume.stored_sessions(store, run_id, plan.jobs)

    # a measurement complete before the prune keeps its row, and is no reason to refuse the
    # run's other measurements (here one that never began); one that still lacks its profile
    # would get its row again, and is
    with Store(db) as store:
        info = store.run(run_id)
        assert info is not None and info.plan is not None
        plan_record = info.plan
        plan_record["options"]["sessions"] = len(before)
        plan_record["jobs"].append({**plan_record["jobs"][0], "job_id": "other-job",
                                    "model": "other"})
        store.set_run_plan(run_id, plan_record)
        assert bench_mod.check_run(store, run_id, plan_record["what"], ["local"],
                                   plan_record["options"]).run_id == run_id
        plan_record["options"]["profile"] = True
        store.set_run_plan(run_id, plan_record)
        with pytest.raises(EdgebenchError, match=f"run {run_id} cannot be resumed"):
            bench_mod.check_run(store, run_id, plan_record["what"], ["local"],
                                plan_record["options"])
