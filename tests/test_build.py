"""build_suite end to end on a tiny suite: manifests, per-entry failures, skip-on-unchanged."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from harness.artifacts import Artifact, load_manifest, sha256_file
from harness.compress.build import BuildReport, _summary, build_suite
from harness.errors import ConfigError
from harness.zoo.models import MODELS, ModelSpec
from tests.conftest import run_cli


class _Unexportable(nn.Module):
    """Exports nowhere: singular values have no ONNX or TFLite lowering here."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svdvals(self.conv(x)).flatten(1)[:, :10]


if "test_unexportable" not in MODELS:
    MODELS.add("test_unexportable",
               ModelSpec("test_unexportable", lambda nc, ch: _Unexportable(), 16, "demo"))

SUITE = """
name: tiny
seed: 0
formats: [onnx]
datasets:
  digits: {type: digits, image_size: 32}
  missing: {type: imagefolder, path: %(missing)s, image_size: 32}
models:
  digits_cnn:
    arch: digits_cnn
    dataset: digits
    train: {epochs: 3, lr: 0.003, threads: 1}
    formats: [onnx, tflite]
    recipes: [int8, prune50]
  elsewhere:
    arch: digits_cnn
    dataset: missing
    recipes: [int8]
  broken: {arch: test_unexportable, input_size: 16}
recipes:
  int8:
    steps: [{quantize_static: {calibration_size: 64}}]
  prune50:
    steps: [{prune_structured: {ratio: 0.5, finetune_epochs: 1}}]
    formats: [onnx]
"""


def _suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(text % {"missing": tmp_path / "no-such-folder"})
    return path


def _by_key(report: BuildReport) -> dict[tuple[str, str], object]:
    return {(a.name, a.format): a for a in report.artifacts}


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, BuildReport]:
    root = tmp_path_factory.mktemp("build")
    suite, out = _suite(root, SUITE), root / "build"
    return suite, out, build_suite(suite, out, console=Console(quiet=True))


@pytest.mark.slow
def test_good_entries_build_and_bad_ones_fail_alone(first) -> None:
    _, out, report = first
    assert set(_by_key(report)) == {("digits_cnn", "onnx"), ("digits_cnn", "tflite"),
                                    ("digits_cnn-int8", "onnx"), ("digits_cnn-int8", "tflite"),
                                    ("digits_cnn-prune50", "onnx")}
    assert report.built == 5 and report.reused == 0
    failures = dict(report.failures)
    for entry in ("elsewhere", "elsewhere-int8"):  # the model's formats are the suite's: onnx
        assert "no-such-folder does not exist" in failures[entry]
    assert "unsupported op aten._linalg_svd" in failures["broken (onnx)"]
    assert not (out / "broken.onnx").exists()


@pytest.mark.slow
def test_manifests_are_complete_and_honest(first) -> None:
    _, out, report = first
    arts = _by_key(report)
    base = load_manifest(out / "digits_cnn.onnx.manifest.json")
    int8 = load_manifest(out / "digits_cnn-int8.onnx.manifest.json")
    int8_tfl = load_manifest(out / "digits_cnn-int8.tflite.manifest.json")
    pruned = load_manifest(out / "digits_cnn-prune50.onnx.manifest.json")
    assert arts[("digits_cnn", "onnx")] == base
    base_tfl = load_manifest(out / "digits_cnn.tflite.manifest.json")
    assert int8_tfl.baseline == base_tfl.name == "digits_cnn" and base_tfl.format == "tflite"
    for art in (base, base_tfl, int8, int8_tfl, pruned):
        assert art.sha256 == sha256_file(art.path) and art.size_bytes == art.path.stat().st_size
        assert art.base_model == "digits_cnn" and art.input_shape == (1, 1, 32, 32)
        assert art.host_accuracy is not None and art.host_accuracy["n"] == 359
        assert art.parity is not None and 0.0 <= art.parity["top1_agreement"] <= 1.0
        assert art.dataset is not None and art.dataset.reference is not None
        # the run sends these hashes instead of hashing the data again
        assert art.dataset.sha256 == {part: sha256_file(path)
                                      for part, path in art.dataset.parts().items()}
        assert art.macs and art.params
    assert base.baseline is None and base.technique == "fp32" and base.lineage == ()
    assert base.parity["max_abs_diff"] < 1e-3  # export parity with PyTorch  # type: ignore[index]
    assert int8.baseline == "digits_cnn" and int8.technique == "int8_static"
    assert int8.precision == "int8" and int8.lineage[0]["technique"] == "quantize_static"
    assert int8.lineage[0]["params"]["calibration_size"] == 64
    assert int8_tfl.input_dtype == "int8" and int8.input_dtype == "float32"
    assert int8.size_bytes < base.size_bytes / 3.3
    assert base.host_accuracy["top1"] > 0.9  # type: ignore[index]
    for quantized in (int8, int8_tfl):  # int8 within a point or two of fp32, on the file itself
        assert abs(quantized.host_accuracy["top1"]  # type: ignore[index]
                   - base.host_accuracy["top1"]) <= 0.02  # type: ignore[index]
        assert quantized.parity["top1_agreement"] >= 0.97  # type: ignore[index]
    assert pruned.macs < 0.35 * base.macs and pruned.params < 0.35 * base.params  # type: ignore
    assert pruned.lineage[0]["result"]["params_after"] == pruned.params
    # The device is fed exactly these tensors; the reference is the fp32 model's logits on them.
    x = np.load(base.dataset.inputs)  # type: ignore[union-attr]
    labels = np.load(base.dataset.labels)  # type: ignore[union-attr]
    ref = np.load(base.dataset.reference)  # type: ignore[union-attr, arg-type]
    assert x.shape == (359, 1, 32, 32) and x.dtype == np.float32 and labels.shape == (359,)
    assert ref.shape == (359, 10)
    assert np.mean(ref.argmax(1) == labels) == pytest.approx(base.host_accuracy["top1"], abs=0.01)


@pytest.mark.slow
def test_unchanged_inputs_are_reused_and_changes_rebuild_only_theirs(first) -> None:
    suite, out, report = first
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.onnx")}
    again = build_suite(suite, out, console=Console(quiet=True))
    assert again.built == 0 and again.reused == 5
    assert {(a.name, a.format, a.sha256) for a in again.artifacts} == {
        (a.name, a.format, a.sha256) for a in report.artifacts}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.onnx")} == stamps
    assert dict(again.failures).keys() == dict(report.failures).keys()

    suite.write_text(suite.read_text().replace("ratio: 0.5, finetune_epochs: 1",
                                               "ratio: 0.25, finetune_epochs: 0"))
    changed = build_suite(suite, out, console=Console(quiet=True))
    assert changed.built == 1 and changed.reused == 4
    pruned = load_manifest(out / "digits_cnn-prune50.onnx.manifest.json")
    assert pruned.lineage[0]["params"]["ratio"] == 0.25
    key = json.loads((out / "digits_cnn-prune50.onnx.build.json").read_text())["key"]
    assert len(key) == 64


def test_the_build_command_says_its_summary_once_on_stdout(first) -> None:
    # Found: `edgebench build` printed "build tiny: 0 built, 5 reused, ..." on stderr and then
    # "built 0, reused 5, 5 artifacts in ..." on stdout: the same summary twice on a terminal.
    suite, out, _ = first
    known = suite.with_name("known.yaml")  # without the model only this process registered
    known.write_text(suite.read_text().replace(
        "  broken: {arch: test_unexportable, input_size: 16}\n", ""))
    proc = run_cli("build", str(known), "--build-dir", str(out))
    assert proc.returncode == 1, proc.stderr  # the suite's broken entries
    assert (proc.stdout + proc.stderr).count(" reused") == 1
    assert re.fullmatch(rf"build tiny: 0 built, 5 reused, 2 failed in [0-9.]+ s"
                        rf"( \(2 processes\))?; 5 artifacts "
                        rf"in {re.escape(str(out))}\n", proc.stdout), proc.stdout


@pytest.mark.parametrize(("change", "says"), [
    ("prune_harder: {}", "prune_harder"),
    # a parameter out of range refuses the suite whole, as any bad input: it used to fail its
    # artifact alone, said only after the fp32 parent had trained
    ("prune_structured: {ratio: 1.5}", "recipes.prune50.steps[0].prune_structured.ratio: "
                                       "ratio=1.5 is out of range"),
    ("lowrank_svd: {rank: 0}", "recipes.prune50.steps[0].lowrank_svd.rank: "
                               "rank must be a positive integer"),
])
def test_malformed_suite_builds_nothing(tmp_path: Path, change: str, says: str) -> None:
    suite = _suite(tmp_path, SUITE.replace("prune_structured: {ratio: 0.5, finetune_epochs: 1}",
                                           change))
    with pytest.raises(ConfigError, match=re.escape(says)):
        build_suite(suite, tmp_path / "build", console=Console(quiet=True))
    assert not (tmp_path / "build").exists()


@pytest.mark.slow
def test_builds_are_bit_reproducible(tmp_path: Path) -> None:
    suite = tmp_path / "repro.yaml"
    suite.write_text("seed: 3\nformats: [onnx]\ndatasets: {digits: {type: digits}}\n"
                     "models: {d: {arch: digits_cnn, dataset: digits, "
                     "train: {epochs: 1, threads: 1}}}\n")
    a = build_suite(suite, tmp_path / "a", console=Console(quiet=True))
    b = build_suite(suite, tmp_path / "b", console=Console(quiet=True))
    assert a.built == b.built == 1
    assert a.artifacts[0].sha256 == b.artifacts[0].sha256
    assert a.artifacts[0].host_accuracy == b.artifacts[0].host_accuracy


def test_a_quantized_artifacts_scratch_file_is_never_another_artifact(tmp_path: Path) -> None:
    """The fp32 file a quantizer reads was written beside the artifacts as `<name>.fp32-tmp`
    and removed after: a model of that very name lost its artifact to `m`'s int8."""
    suite = tmp_path / "clash.yaml"
    suite.write_text("seed: 0\nformats: [onnx]\n"
                     "models:\n"
                     "  m-int8.fp32-tmp: {arch: digits_cnn, input_size: 32}\n"
                     "  m: {arch: digits_cnn, input_size: 32, recipes: [int8]}\n"
                     "recipes: {int8: {steps: [{quantize_static: {calibration_size: 8}}]}}\n")
    report = build_suite(suite, tmp_path / "build", console=Console(quiet=True), workers=0)
    assert report.built == 3 and not report.failures
    for artifact in report.artifacts:
        assert artifact.path.is_file(), artifact.name
    assert sorted(p.name for p in (tmp_path / "build").glob("*.onnx")) == \
        ["m-int8.fp32-tmp.onnx", "m-int8.onnx", "m.onnx"]


def _opset_suite(path: Path, opset: str) -> Path:
    path.write_text("seed: 0\nformats: [onnx, torch]\n" + opset
                    + "models: {m: {arch: digits_cnn, input_size: 32, recipes: [int8]}}\n"
                    "recipes: {int8: {steps: [{quantize_static: {calibration_size: 8}}], "
                    "formats: [onnx]}}\n")
    return path


def test_the_suites_onnx_opset_rebuilds_the_onnx_files_in_it(tmp_path: Path) -> None:
    """Found by an audit: no ONNX file edgebench built loaded on the onnxruntime 1.12 to 1.16 of
    JetPack 5: IR 10, and the int8 file imported opsets no node uses. Each ONNX file now
    imports only what its nodes use at the lowest IR version, and `onnx: {opset: 17}` builds
    files that 1.12 and 1.13 take and that compute what the opset-18 files compute."""
    import onnx

    from harness.compress.export import run_exported

    out = tmp_path / "build"
    suite = _opset_suite(tmp_path / "opset.yaml", "")
    first = build_suite(suite, out, console=Console(quiet=True), workers=0)
    assert first.built == 3 and not first.failures
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    at_18 = {name: run_exported(out / name, "onnx", x) for name in ("m.onnx", "m-int8.onnx")}
    torch_file = (out / "m.pt2").stat().st_mtime_ns

    suite = _opset_suite(suite, "onnx: {opset: 17}\n")
    again = build_suite(suite, out, console=Console(quiet=True), workers=0)
    assert again.built == 2 and again.reused == 1  # the ONNX files, not the .pt2
    assert (out / "m.pt2").stat().st_mtime_ns == torch_file
    for name, outputs in at_18.items():
        model = onnx.load(str(out / name))
        assert {o.domain: o.version for o in model.opset_import} == {"": 17}, name
        assert model.ir_version == 8, name
        assert load_manifest(out / f"{name}.manifest.json").onnx == {"opset": 17,
                                                                     "ir_version": 8}
        got = run_exported(out / name, "onnx", x)  # onnxruntime loads and runs it
        assert np.array_equal(got.argmax(1), outputs.argmax(1)), name
        np.testing.assert_allclose(got, outputs, rtol=1e-5, atol=1e-5, err_msg=name)
    assert load_manifest(out / "m.pt2.manifest.json").onnx is None
    back = build_suite(_opset_suite(suite, ""), out, console=Console(quiet=True), workers=0)
    assert back.built == 2 and load_manifest(out / "m.onnx.manifest.json").onnx == {
        "opset": 18, "ir_version": 8}


@pytest.mark.slow
def test_independent_models_are_built_side_by_side_into_the_same_bytes(tmp_path: Path) -> None:
    """A trained model and a latency-only one share nothing: with a worker process they are
    built at the same time, into the same artifacts, listed in the same (suite) order, and the
    worker's lines come through the caller's console."""
    suite = tmp_path / "two.yaml"
    suite.write_text("seed: 0\nformats: [onnx]\ndatasets: {digits: {type: digits}}\n"
                     "models:\n"
                     "  trained: {arch: digits_cnn, dataset: digits, recipes: [int8],\n"
                     "            train: {epochs: 1, threads: 1}}\n"
                     "  latency: {arch: digits_cnn, input_size: 32, recipes: [int8]}\n"
                     "recipes: {int8: {steps: [{quantize_static: {calibration_size: 16}}]}}\n")
    alone = build_suite(suite, tmp_path / "alone", console=Console(quiet=True), workers=0)
    shown = io.StringIO()
    side = build_suite(suite, tmp_path / "side", console=Console(file=shown, width=200),
                       workers=1)
    assert alone.built == side.built == 4 and not side.failures
    assert [(a.name, a.format, a.sha256) for a in side.artifacts] == \
        [(a.name, a.format, a.sha256) for a in alone.artifacts]
    assert [a.name for a in side.artifacts] == ["trained", "trained-int8", "latency",
                                                "latency-int8"]
    assert "built latency-int8.onnx" in shown.getvalue()  # built by the worker
    assert "(2 processes)" in shown.getvalue()
    again = build_suite(suite, tmp_path / "side", console=Console(quiet=True), workers=1)
    assert again.reused == 4 and again.built == 0  # nothing to build: no worker either


def test_pets_suite_fails_fast_without_the_dataset(tmp_path: Path, monkeypatch) -> None:
    suite = Path(__file__).resolve().parent.parent / "models" / "pets.yaml"
    monkeypatch.chdir(tmp_path)  # the suite's relative data/pets path is then surely absent
    (tmp_path / "weights").mkdir()  # present (a missing one is refused at load: test_suite.py)
    for name in ("resnet50-0676ba61.pth", "resnet18-f37072fd.pth"):
        (tmp_path / "weights" / name).touch()
    report = build_suite(suite, tmp_path / "build", console=Console(quiet=True))
    assert report.built == 0 and not report.artifacts
    names = {name for name, _ in report.failures}
    assert {"resnet50_teacher", "resnet50_teacher-student_pruned_qat"} <= names
    for _, message in report.failures:
        # the full path looked at: "data/pets does not exist", run from another folder than
        # the user's, did not say where edgebench had looked
        assert message.startswith(
            f"dataset 'pets': dataset path {tmp_path / 'data' / 'pets'} (a relative path is "
            "taken from the folder edgebench runs in, not the suite file's) does not exist")


def test_the_build_line_says_a_calibration_short_of_what_was_asked() -> None:
    """Found by a user: `calibration_size: 1000` on a folder of 180 images calibrated on the 126
    of its training split, said only in the manifest's lineage."""
    def artifact(asked: int, took: int) -> Artifact:
        step = {"technique": "quantize_static", "params": {"calibration_size": asked},
                "result": {"calibration_n": took}}
        return Artifact("m-int8", Path("m-int8.onnx"), "onnx", "0" * 64, 2048, baseline="m",
                        host_accuracy={"top1": 1.0}, parity={"top1_agreement": 1.0},
                        lineage=(step,))

    assert _summary(artifact(1000, 126)) == (
        "2 KiB, top-1 1.000, top-1 agreement with m 1.000, calibrated on 126 images, not the "
        "1000 of calibration_size (all the training split has)")
    assert _summary(artifact(64, 64)) == "2 KiB, top-1 1.000, top-1 agreement with m 1.000"


def test_the_build_line_says_what_agreement_is_measured_against() -> None:
    def artifact(baseline: str | None, acc: dict | None, agree: float) -> Artifact:
        return Artifact("m", Path("m.onnx"), "onnx", "0" * 64, 2048, baseline=baseline,
                        host_accuracy=acc, parity={"top1_agreement": agree})

    assert _summary(artifact(None, {"top1": 0.99}, 1.0)) == \
        "2 KiB, top-1 0.990, top-1 agreement with PyTorch 1.000"
    assert _summary(artifact("digits_cnn", {"top1": 0.98}, 0.994)) == \
        "2 KiB, top-1 0.980, top-1 agreement with digits_cnn 0.994"
    # a pruned random-weight ResNet: 0% is what random inputs give, not a broken file
    assert _summary(artifact("resnet18", None, 0.0)) == \
        "2 KiB, latency only, top-1 agreement with resnet18 0.000 on random inputs"


def _children(pid: int) -> dict[int, str]:
    """The live child processes of `pid`, with their command lines."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, ppid = text[text.rindex(")") + 2:].split()[:2]
        if int(ppid) == pid and state != "Z":
            found[int(stat.parent.name)] = cmdline
    return found


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] != "Z"  # a zombie whose reaper is slow


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_build_worker_stops_when_its_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL runs none of the parent's clean-up: the worker must notice by itself, and stop
    in the middle of its model (a long training here) instead of finishing it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    suite = tmp_path / "two.yaml"
    suite.write_text("seed: 0\nformats: [onnx]\ndatasets: {digits: {type: digits}}\n"
                     "models:\n"
                     "  latency: {arch: digits_cnn, input_size: 32}\n"  # the parent's
                     "  trained: {arch: digits_cnn, dataset: digits,\n"  # the worker's
                     "            train: {epochs: 2000, threads: 1}}\n")
    build = tmp_path / "build"
    code = ("import sys; from pathlib import Path; from rich.console import Console; "
            "from harness.compress.build import build_suite; "
            "build_suite(Path(sys.argv[1]), Path(sys.argv[2]), console=Console(quiet=True), "
            "workers=1)")
    repo = Path(__file__).resolve().parent.parent
    parent = subprocess.Popen([sys.executable, "-c", code, str(suite), str(build)], cwd=repo,
                              env=dict(os.environ, PYTHONPATH=str(repo)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 300  # against a hang, not a measurement
        while worker is None or not (build / "latency.onnx").exists():
            assert parent.poll() is None, "the build ended before its worker could be seen"
            assert time.monotonic() < deadline, "no worker, or the parent's model not built"
            workers = [p for p, cmd in _children(parent.pid).items() if "spawn_main" in cmd]
            worker = workers[0] if workers else worker
            time.sleep(0.2)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 60  # a 2000-epoch training takes far longer
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "the worker went on building after its parent was killed"
        assert not (build / "trained.onnx").exists()  # stopped, not finished
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
