"""`edgebench export --format csv|json|parquet`: every row of the run, documented field names;
with `--sessions` one row per session, with `--operators` the profiles' top operators, each led by
its measurement's columns."""

from __future__ import annotations

import io
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from harness import results
from harness.cli import main
from harness.errors import EdgebenchError, StoreError
from harness.report import run_export
from harness.report.export import (
    MEASUREMENT_KEYS,
    OPERATOR_EXPORT_COLUMNS,
    SESSION_EXPORT_COLUMNS,
)
from harness.results import PROFILE_OP_FIELDS, SESSION_FIELDS
from harness.store import RESULT_FIELDS, Store, fingerprint_sha256
from tests.test_report_synthetic import FINGERPRINT, add_job, demo_store, lognormal_ns, sessions_ns


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[dict]]:
    path = tmp_path_factory.mktemp("export") / "x.db"
    store, run = demo_store(path)
    # A second run, which an export of the first must leave out.
    other = store.begin_run("t", None, ["pi5"])
    add_job(store, other, "later", samples_ns=lognormal_ns(3, seed=9))
    rows = store.results([run])
    store.close()
    return path, run, rows


def test_json_to_stdout_is_the_stored_rows(db, capsys) -> None:
    path, run, rows = db
    run_export(path, run, "json")
    exported = json.loads(capsys.readouterr().out)
    assert exported == rows
    assert list(exported[0]) == list(RESULT_FIELDS)
    mobilenet = next(r for r in exported if r["model"] == "mobilenet_v3")
    assert mobilenet["accuracy_top1"] is None  # null, not 0
    assert isinstance(mobilenet["device_fingerprint"], dict)


def test_csv_to_stdout_has_every_row_and_field(db, capsys) -> None:
    path, run, rows = db
    run_export(path, run, "csv")
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(csv.columns) == list(RESULT_FIELDS)
    assert len(csv) == len(rows) and set(csv["run_id"]) == {run}
    assert csv["latency_median_ms"].tolist() == pytest.approx(
        [
            r["latency_median_ms"] if r["latency_median_ms"] is not None else float("nan")
            for r in rows
        ],
        nan_ok=True,
    )
    assert csv["params"].dtype.kind == "i"  # integers stay integers
    failed = csv[csv["status"] == "failed"].iloc[0]
    assert "DequantizeLinear" in failed["error_message"]
    assert json.loads(csv["device_fingerprint"][0]) == rows[0]["device_fingerprint"]


def test_parquet_to_file_round_trips(db, tmp_path: Path) -> None:
    path, run, rows = db
    out = tmp_path / "run.parquet"
    run_export(path, run, "parquet", out)
    back = pd.read_parquet(out)
    assert list(back.columns) == list(RESULT_FIELDS)
    assert back["job_id"].tolist() == [r["job_id"] for r in rows]
    assert back["size_bytes"].tolist() == [r["size_bytes"] for r in rows]
    # a failed measurement has no stability verdict: NA in parquet, None in the store
    assert [None if pd.isna(v) else bool(v) for v in back["stable"]] == [r["stable"] for r in rows]
    assert pd.isna(back.loc[back["model"] == "mobilenet_v3", "accuracy_top1"]).all()


def test_csv_and_json_to_a_file(db, tmp_path: Path) -> None:
    path, run, rows = db
    run_export(path, run, "csv", tmp_path / "r.csv")
    run_export(path, run, "json", tmp_path / "r.json")
    assert len(pd.read_csv(tmp_path / "r.csv")) == len(rows)
    assert json.loads((tmp_path / "r.json").read_text()) == rows


def test_bad_requests_name_what_is_wrong(db, tmp_path: Path) -> None:
    path, run, _ = db
    with pytest.raises(EdgebenchError, match="parquet.*--out"):
        run_export(path, run, "parquet")
    with pytest.raises(EdgebenchError, match="unknown export format 'xlsx'.*csv, json, parquet"):
        run_export(path, run, "xlsx")
    with pytest.raises(StoreError, match="no run 'nope'"):
        run_export(path, "nope", "csv")
    with pytest.raises(StoreError, match="missing.db"):
        run_export(tmp_path / "missing.db", "latest", "csv")
    for fmt in ("csv", "json", "parquet"):
        with pytest.raises(EdgebenchError, match="no_such_dir.*cannot write"):
            run_export(path, run, fmt, tmp_path / "no_such_dir" / f"r.{fmt}")


def test_export_of_latest_and_of_an_empty_run(tmp_path: Path, capsys) -> None:
    store = Store(tmp_path / "x.db")
    store.begin_run("t", None, ["pi5"])
    store.close()
    run_export(tmp_path / "x.db", "latest", "csv")
    assert capsys.readouterr().out.strip() == ",".join(RESULT_FIELDS)
    run_export(tmp_path / "x.db", "latest", "json")
    assert json.loads(capsys.readouterr().out) == []


def test_sessions_give_back_every_headline_median_also_once_pruned(db, tmp_path: Path) -> None:
    """A measurement's headline is the geometric mean of its ok sessions' medians: the sessions
    export is enough to recompute it, and still is once `db prune` dropped the samples."""
    path, run, rows = db
    pruned = tmp_path / "pruned.db"
    shutil.copy(path, pruned)
    with Store(pruned) as store:
        assert store.prune_samples("1").sessions > 0  # the older run: the one exported
        # the first measured sorts last by id: the export keeps the order measured
        first, renamed = rows[0]["job_id"], "z" + rows[0]["job_id"]
        with store.transaction() as conn:
            for table in ("results", "sessions"):
                conn.execute(f"UPDATE {table} SET job_id = ? WHERE job_id = ?", (renamed, first))
    rows = [{**r, "job_id": renamed if r["job_id"] == first else r["job_id"]} for r in rows]
    out = tmp_path / "sessions.csv"
    assert main(["export", "--db", str(pruned), "--run", run, "--sessions", "--format", "csv",
                 "--out", str(out)]) == 0
    sessions = pd.read_csv(out)
    assert list(sessions.columns) == [c.name for c in SESSION_EXPORT_COLUMNS]
    assert "samples" not in sessions and set(sessions["run_id"]) == {run}
    assert list(dict.fromkeys(sessions["job_id"])) == [r["job_id"] for r in rows]
    by_job = {r["job_id"]: r for r in rows}
    ok = sessions[sessions["status"] == "ok"]
    assert set(ok["job_id"]) == {r["job_id"] for r in rows if r["status"] == "ok"}
    for job_id, group in ok.groupby("job_id"):
        row = by_job[job_id]
        assert len(group) == row["sessions"] == 5
        assert float(np.exp(np.log(group["median_ms"]).mean())) == pytest.approx(
            row["latency_median_ms"], rel=1e-12)
        for key in ("device", "model", "technique", "format", "runtime", "threads", "batch"):
            assert group[key].tolist() == [row[key]] * len(group), key
    (failed,) = sessions[sessions["status"] != "ok"].itertuples()
    assert failed.model == "mobilenet_v3-int8" and "DequantizeLinear" in failed.error_message


def _fingerprinted_store(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """One measurement of three sessions: on the device as first probed, after a kernel update,
    and one stored before schema 5 (no fingerprint of its own), under a row whose fingerprint is
    none of theirs; returns the job and the fingerprint each session should export."""
    store = Store(path)
    run = store.begin_run("t", None, ["pi5"])
    job = add_job(store, run, "net", samples_ns=sessions_ns(5.0, sessions=3, seed=3))
    store.close()
    updated, row = dict(FINGERPRINT, kernel="6.8.0-new"), dict(FINGERPRINT, kernel="6.12.0")
    key, text = fingerprint_sha256(updated)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO fingerprints (sha256, fingerprint) VALUES (?, ?)", (key, text))
        conn.execute("UPDATE sessions SET fingerprint_sha256 = ? WHERE session = 1", (key,))
        conn.execute("UPDATE sessions SET fingerprint_sha256 = NULL WHERE session = 2")
        conn.execute("UPDATE results SET device_fingerprint = ?",
                     (json.dumps(row, sort_keys=True),))
    conn.close()
    return job, [FINGERPRINT, updated, row]


def test_each_session_exports_the_fingerprint_it_ran_on(tmp_path: Path, capsys) -> None:
    path = tmp_path / "f.db"
    job, expected = _fingerprinted_store(path)
    with Store(path, readonly=True) as store:
        stored = store.sessions([job])
    assert main(["export", "--db", str(path), "--sessions", "--format", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [s["fingerprint"] for s in exported] == expected
    assert exported[0]["fingerprint_sha256"] == fingerprint_sha256(expected[0])[0]
    assert exported[2]["fingerprint_sha256"] is None  # how an inherited one is told apart
    for got, session in zip(exported, stored, strict=True):  # everything else as stored
        assert {k: got[k] for k in session if k != "fingerprint"} == {
            k: v for k, v in session.items() if k != "fingerprint"}
    assert isinstance(exported[0]["state_before"], dict)  # nested, not text
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"s.{fmt}"
        assert main(["export", "--db", str(path), "--sessions", "--format", fmt,
                     "--out", str(out)]) == 0
        table = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
        assert list(table.columns) == [c.name for c in SESSION_EXPORT_COLUMNS]
        assert [json.loads(t) for t in table["fingerprint"]] == expected, fmt
        assert json.loads(table["state_after"][0]) == stored[0]["state_after"]
        assert table["session"].tolist() == [0, 1, 2]


ORT_PROFILE = {
    "tool": "onnxruntime", "timed": True, "iterations": 20,
    "ops": [{"name": "Conv_0", "op_type": "Conv", "provider": "CUDAExecutionProvider",
             "calls": 1, "time_ms": 0.8},
            {"name": "Softmax_2", "op_type": "Softmax", "provider": "CPUExecutionProvider",
             "calls": 1, "time_ms": 0.1},
            {"name": "Gemm_1", "op_type": "Gemm", "provider": "CUDAExecutionProvider",
             "calls": 1, "time_ms": 0.3}],
    "placement": {"providers": {"CUDAExecutionProvider": {"nodes": 2, "time_ms": 1.1}},
                  "cpu_fallback": True, "fallback_reasons": ["Softmax_2 on the CPU"]}}
LITERT_PROFILE = {
    "tool": "litert_ops", "timed": False, "iterations": 1,
    "ops": [{"name": "OP_0", "op_type": "CONV_2D", "provider": "XNNPACK", "calls": 1},
            {"name": "OP_1", "op_type": "SOFTMAX", "provider": "CPU", "calls": 1}],
    "placement": {"ops_total": 2, "ops_delegated": 1, "partitions": 1}}


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, Any]]:
    """A run of three measurements: profiled by ONNX Runtime (a CPU fallback), by LiteRT
    (untimed) and not at all; and a later run, whose profile an export of the first leaves out."""
    path = tmp_path_factory.mktemp("ops") / "p.db"
    store = Store(path)
    run = store.begin_run("t", None, ["jetson"])
    jobs = {name: add_job(store, run, name, device="jetson") for name in ("ort", "lite", "none")}
    later = store.begin_run("t", None, ["jetson"])
    jobs["later"] = add_job(store, later, "ort", device="jetson")
    for name, profile in (("ort", ORT_PROFILE), ("lite", LITERT_PROFILE),
                          ("later", ORT_PROFILE)):
        (row,) = store.find_results(job_id=jobs[name])
        prow, ops = results.profile_rows(jobs[name], {"status": "ok", "profile": profile},
                                         started_at="t")
        store.add_profile(prow, ops, row)
    store.close()
    return path, run, jobs


def test_operators_are_the_stored_top_operators_with_their_measurement(profiled, tmp_path: Path,
                                                                      capsys) -> None:
    path, run, jobs = profiled
    with Store(path, readonly=True) as store:
        rows = {r["job_id"]: r for r in store.results([run])}
        profiles = {p["job_id"]: p for p in store.profiles(list(rows))}
        ops = store.profile_ops(list(rows))
    assert main(["export", "--db", str(path), "--run", run, "--operators", "--format",
                 "json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [list(e) for e in exported] == [[c.name for c in OPERATOR_EXPORT_COLUMNS]] * 5
    assert [{k: e[k] for k in PROFILE_OP_FIELDS} for e in exported] == ops
    for e in exported:
        row, profile = rows[e["job_id"]], profiles[e["job_id"]]
        assert {k: e[k] for k in MEASUREMENT_KEYS} == {k: row[k] for k in MEASUREMENT_KEYS}
        assert {k: e[k] for k in ("tool", "timed", "iterations", "total_ms", "placement")} == {
            k: profile[k] for k in ("tool", "timed", "iterations", "total_ms", "placement")}
        assert e["cpu_fallback"] is (e["job_id"] == jobs["ort"])
    assert {e["job_id"] for e in exported} == {jobs["ort"], jobs["lite"]}
    assert [e["name"] for e in exported if e["job_id"] == jobs["ort"]] == [
        "Conv_0", "Gemm_1", "Softmax_2"]  # by rank: by time
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"o.{fmt}"
        assert main(["export", "--db", str(path), "--run", run, "--operators", "--format", fmt,
                     "--out", str(out)]) == 0
        table = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
        assert list(table.columns) == [c.name for c in OPERATOR_EXPORT_COLUMNS]
        assert table["rank"].tolist() == [o["rank"] for o in ops]
        assert table["share"].tolist() == pytest.approx(
            [float("nan") if o["share"] is None else o["share"] for o in ops], nan_ok=True)
        assert [json.loads(p) for p in table["placement"]] == [e["placement"] for e in exported]


@pytest.mark.parametrize("flag", ["--sessions", "--operators"])
def test_a_run_with_none_exports_the_header_alone(tmp_path: Path, capsys, flag: str) -> None:
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(store, run, "net")  # measured, but not profiled
    store.begin_run("t", None, ["pi5"])  # the latest: nothing measured yet
    store.close()
    columns = SESSION_EXPORT_COLUMNS if flag == "--sessions" else OPERATOR_EXPORT_COLUMNS
    for which in ("latest", run) if flag == "--operators" else ("latest",):
        for fmt in ("csv", "json"):
            assert main(["export", "--db", str(tmp_path / "x.db"), "--run", which, flag,
                         "--format", fmt]) == 0
            out = capsys.readouterr().out
            if fmt == "csv":
                assert out == ",".join(c.name for c in columns) + "\n"
            else:
                assert json.loads(out) == []


def test_one_table_at_a_time(db, capsys) -> None:
    path = str(db[0])
    for flags in (["--samples", "--sessions"], ["--sessions", "--operators"],
                  ["--operators", "--samples"]):
        with pytest.raises(SystemExit) as exit_:
            main(["export", "--db", path, "--format", "csv", *flags])
        assert exit_.value.code == 2
        assert f"argument {flags[1]}: not allowed with argument {flags[0]}" in \
            capsys.readouterr().err


@pytest.mark.parametrize("table", ["sessions", "operators"])
def test_unwritable_output_is_one_line_naming_the_file(db, tmp_path: Path, capsys,
                                                       table: str) -> None:
    path, run, _ = db
    for fmt in ("csv", "json", "parquet"):
        out = tmp_path / "no_such_dir" / f"r.{fmt}"
        assert main(["export", "--db", str(path), f"--{table}", "--format", fmt,
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"edgebench: error: {out}: cannot write the export"), err
        assert len(err.splitlines()) == 1
    with pytest.raises(EdgebenchError, match="parquet.*--out"):
        run_export(path, run, "parquet", table=table)
    with pytest.raises(EdgebenchError, match="unknown export table 'ops'"):
        run_export(path, run, "csv", table="ops")


def test_results_readme_documents_each_column_an_export_adds() -> None:
    text = (Path(__file__).resolve().parent.parent / "results" / "README.md").read_text()
    section = re.search(r"^## Exports$.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, "results/README.md has no section Exports"
    documented = [name.strip() for line in section.group(0).splitlines()
                  if line.startswith("| ") and not line.startswith("| column")
                  for name in line.split("|")[1].split(",")]
    added = {*MEASUREMENT_KEYS,
             *(c.name for c in SESSION_EXPORT_COLUMNS if c.name not in SESSION_FIELDS),
             *(c.name for c in OPERATOR_EXPORT_COLUMNS if c.name not in PROFILE_OP_FIELDS)}
    assert sorted(documented) == sorted(added)


def _interrupt_after_first(real: Any) -> Any:
    """`Store.iter_session_samples` stopped by a Ctrl-C after the first session was written."""
    def stopped(self: Store, job_ids: Any) -> Any:
        for i, item in enumerate(real(self, job_ids)):
            if i == 1:
                raise KeyboardInterrupt
            yield item
    return stopped


@pytest.mark.parametrize("flag,fmt", [("--samples", "csv"), ("--samples", "parquet"),
                                      (None, "csv"), ("--sessions", "json")])
def test_an_interrupted_export_leaves_the_file_that_was_there(
        db, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, flag: str | None,
        fmt: str) -> None:
    """Ctrl-C in the middle of `export --out`: the file there before stays as it was, and no
    part of the new one is left, neither under its name (a CSV cut at a line end reads as whole)
    nor under a temporary one. The stop is injected where it lands in a real export: between
    two sessions' samples, or as pandas or json finishes writing."""
    path, run, _ = db
    out = tmp_path / f"victim.{fmt}"
    out.write_bytes(b"yesterday's export\n")
    if flag == "--samples":
        monkeypatch.setattr(Store, "iter_session_samples",
                            _interrupt_after_first(Store.iter_session_samples))
    else:
        def written_then_stopped(real: Any) -> Any:
            def write(*args: Any, **kwargs: Any) -> Any:
                real(*args, **kwargs)
                raise KeyboardInterrupt
            return write
        if fmt == "csv":
            monkeypatch.setattr(pd.DataFrame, "to_csv", written_then_stopped(pd.DataFrame.to_csv))
        else:
            monkeypatch.setattr(Path, "write_text", written_then_stopped(Path.write_text))
    argv = ["export", "--db", str(path), "--run", run, "--format", fmt, "--out", str(out)]
    assert main(argv + ([flag] if flag else [])) == 130
    assert capsys.readouterr().err.strip() == (
        "edgebench: interrupted; nothing was written (a file already at --out is as it was)")
    assert out.read_bytes() == b"yesterday's export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    monkeypatch.undo()
    assert main(argv + ([flag] if flag else [])) == 0  # and uninterrupted, it is replaced whole
    assert out.read_bytes() != b"yesterday's export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
