"""The `torch` build format: a `torch.export` program (`.pt2`) with the same manifest, parity and
accuracy checks as ONNX and TFLite, measured by the agent's torch runtime with the same result."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from harness.artifacts import load_manifest, sha256_file
from harness.compress.build import BuildReport, build_suite
from harness.compress.suite import load_suite
from harness.errors import ConfigError
from harness.store import Store
from tests.conftest import run_cli

SUITE = """
name: torchfmt
seed: 0
formats: [torch]
datasets:
  digits: {type: digits, image_size: 32}
models:
  digits_cnn:
    arch: digits_cnn
    dataset: digits
    train: {epochs: 1, lr: 0.003, threads: 1}
    recipes: [prune]
recipes:
  prune:
    steps: [{prune_structured: {ratio: 0.3, finetune_epochs: 0}}]
  int8:
    steps: [{quantize_dynamic: {}}]
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildReport]:
    root = tmp_path_factory.mktemp("torchfmt")
    suite = root / "torchfmt.yaml"
    suite.write_text(SUITE)
    return root, build_suite(suite, root / "build", console=Console(quiet=True))


def test_pt2_artifacts_carry_manifest_parity_and_accuracy(built: tuple[Path, BuildReport]
                                                          ) -> None:
    root, report = built
    by_name = {a.name: a for a in report.artifacts}
    base = by_name["digits_cnn"]
    assert base.format == "torch" and base.path.suffix == ".pt2"
    assert base.sha256 == sha256_file(base.path)
    assert load_manifest(base.manifest_path) == base
    assert base.input_dtype == "float32" and base.input_shape == (1, 1, 32, 32)
    # the program computes what the module computed: the build refuses it otherwise
    assert base.parity is not None and base.parity["top1_agreement"] == 1.0
    assert base.host_accuracy is not None and base.host_accuracy["top1"] > 0.5
    pruned = by_name["digits_cnn-prune"]
    assert pruned.baseline == "digits_cnn" and pruned.parity is not None
    assert pruned.params is not None and base.params is not None
    assert pruned.params < base.params
    assert not report.failures


def test_int8_for_a_torch_program_is_refused_when_the_suite_is_loaded(tmp_path: Path) -> None:
    # int8 rewrites ONNX or TFLite files: it failed at build, after the baseline had trained
    suite = tmp_path / "torchfmt.yaml"
    suite.write_text(SUITE.replace("recipes: [prune]", "recipes: [prune, int8]"))
    with pytest.raises(ConfigError, match=r"models\.digits_cnn\.recipes\[1\]: recipe int8: "
                       r"quantize_dynamic \(steps\[0\]\) produces only onnx, tflite, and this "
                       r"model is built only as torch"):
        load_suite(suite)


def test_pt2_measured_on_the_device_scores_as_on_the_host(built: tuple[Path, BuildReport],
                                                          tmp_path: Path) -> None:
    root, report = built
    base = next(a for a in report.artifacts if a.name == "digits_cnn")
    db = tmp_path / "r.db"
    proc = run_cli("bench", "--model", str(base.path), "--quick", "--sessions", "1",
                   "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    with Store(db, readonly=True) as store:
        (row,) = store.results()
    assert row["runtime"] == "torch" and row["format"] == "torch" and row["status"] == "ok"
    assert row["timer"] == "perf_counter" and row["accelerator"] is None
    assert row["accuracy_top1"] == base.host_accuracy["top1"]  # type: ignore[index]
    assert row["ref_top1_agreement"] == 1.0
