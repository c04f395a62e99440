"""Build a small suite and bench it: what the device measures agrees with what the host built.

The whole pipeline through the CLI, as `make bench` runs it: suite -> artifacts with manifests ->
jobs with datasets -> agent -> store -> export. Accuracy is measured on the device by the runtime
that was timed, on the tensors the host pre-processed, so it must equal the host's own figure for
the same artifact; an int8-input TFLite model exercises the agent's quantization of inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.store import Store
from tests.conftest import run_cli

SUITE = """
name: benchsuite
seed: 0
formats: [onnx, tflite]
datasets:
  digits: {type: digits, image_size: 32}
models:
  digits_cnn:
    arch: digits_cnn
    dataset: digits
    train: {epochs: 2, lr: 0.003, threads: 1}
    recipes: [int8]
recipes:
  int8:
    steps: [{quantize_static: {calibration_size: 64}}]
"""


@pytest.mark.slow
def test_bench_suite_end_to_end(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    db, build = tmp_path / "r.db", tmp_path / "build"
    proc = run_cli("bench", "--suite", str(suite), "--quick", "--threads", "1", "--db", str(db),
                   "--build-dir", str(build), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Store(db) as store:
        rows = store.results()
    by_key = {(r["model"], r["runtime"]): r for r in rows}
    assert set(by_key) == {
        ("digits_cnn", "onnxruntime"), ("digits_cnn", "tflite"),
        ("digits_cnn-int8", "onnxruntime"), ("digits_cnn-int8", "tflite"),
    }
    for row in rows:
        assert row["status"] == "ok", row["error_message"]
        assert row["dataset"] == "digits"
        assert row["accuracy_n"] and row["accuracy_n"] > 300  # the held-out split
        # same artifact, same runtime, same tensors: the device agrees with the build
        assert row["accuracy_top1"] == pytest.approx(row["host_top1"], abs=1e-6)
        # which instruction set the host's top-1 came from, named as the device's is: this
        # machine built it and measured it
        assert row["host_isa"] and row["host_isa"] == row["isa"]
        assert row["ref_top1_agreement"] == pytest.approx(row["parity_top1_agreement"], abs=1e-6)
        assert row["params"] and row["macs"] and row["size_bytes"]
    int8_tflite = by_key[("digits_cnn-int8", "tflite")]
    assert int8_tflite["runtime_options"]["input_dtype"] == "int8"
    assert int8_tflite["baseline"] == "digits_cnn"
    assert int8_tflite["precision"] == "int8"
    assert int8_tflite["lineage"][0]["technique"] == "quantize_static"
    assert int8_tflite["accuracy_top1"] > 0.8  # a trained model, not chance (0.1)
    assert int8_tflite["size_bytes"] < by_key[("digits_cnn", "tflite")]["size_bytes"] / 2

    # a second bench reuses the artifacts and the export shows both runs' rows
    proc = run_cli("bench", "--suite", str(suite), "--quick", "--db", str(db), "--build-dir",
                   str(build), "--runtime", "onnxruntime", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 built" in proc.stderr or "reused" in proc.stderr
    out = run_cli("export", "--run", "latest", "--format", "json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    exported = json.loads(out.stdout)
    records = exported if isinstance(exported, list) else exported["results"]
    assert {r["runtime"] for r in records} == {"onnxruntime"}
    assert len(records) == 2
