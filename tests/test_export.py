"""`edgebench export --format csv|json|parquet`: every row of the run, documented field names."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import EdgebenchError, StoreError
from harness.report import run_export
from harness.store import RESULT_FIELDS, Store
from tests.test_report_synthetic import add_job, demo_store, lognormal_ns


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
