"""What a build reads decides whether an artifact is rebuilt: files named by step parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from harness.compress.build import build_suite
from harness.compress.techniques import load_all
from harness.zoo.models import build_model


def _student_weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(build_model("digits_cnn_small", 10, 1).state_dict(), path)
    return path


@pytest.mark.slow
def test_a_changed_student_weights_file_rebuilds_the_distilled_artifact(tmp_path: Path) -> None:
    # Found in an audit: the key hashed the path of `student_weights`, not the file, so a
    # distilled artifact trained from the old weights was reused after the file changed.
    weights = _student_weights(tmp_path / "student.pt", seed=0)
    suite = tmp_path / "kd.yaml"
    suite.write_text("seed: 0\nformats: [onnx]\ndatasets: {digits: {type: digits}}\n"
                     "models: {m: {arch: digits_cnn, dataset: digits, recipes: [kd]}}\n"
                     "recipes:\n"
                     "  kd: {steps: [{distill: {student: digits_cnn_small, "
                     f"student_weights: '{weights}', epochs: 1}}}}]}}\n")
    out = tmp_path / "build"
    first = build_suite(suite, out, console=Console(quiet=True), workers=0)
    assert first.built == 2 and not first.failures
    assert build_suite(suite, out, console=Console(quiet=True), workers=0).reused == 2
    _student_weights(weights, seed=1)  # same path, other weights
    changed = build_suite(suite, out, console=Console(quiet=True), workers=0)
    assert (changed.built, changed.reused) == (1, 1)  # the distilled one; the baseline stays
    before = {a.name: a.sha256 for a in first.artifacts}
    after = {a.name: a.sha256 for a in changed.artifacts}
    assert after["m"] == before["m"] and after["m-kd"] != before["m-kd"]


def test_file_parameters_are_declared_on_their_technique() -> None:
    """The key hashes the files a technique declares (`files`); each must be a parameter."""
    techniques = load_all()
    assert techniques.get("distill").files == ("student_weights",)
    for name in techniques.names():
        tech = techniques.get(name)
        assert set(tech.files) <= set(tech.defaults), name
    params = {**techniques.get("distill").defaults, "student_weights": "~/s.pt"}
    assert techniques.get("distill").file_params(params) == {
        "student_weights": Path.home() / "s.pt"}


@pytest.mark.slow
def test_the_manifest_holds_what_reproducing_an_artifact_takes(tmp_path: Path) -> None:
    # Found in an audit: the baseline's training, the seed and the library versions were only
    # hashed into the build key; distill recorded "lr": null for the rate its training used,
    # and a TFLite quantize_dynamic recorded ONNX Runtime's per_channel and reduce_range.
    import platform
    from importlib import metadata

    from harness import __version__
    from harness.agent import isa, probes
    from harness.agent.runtimes import get_runtime
    from harness.artifacts import load_manifest
    from harness.compress.export import HOST_OPTIONS, HOST_RUNTIME

    suite = tmp_path / "paper.yaml"
    suite.write_text("seed: 5\ndatasets: {digits: {type: digits}}\n"
                     "models:\n"
                     "  m: {arch: digits_cnn, dataset: digits, recipes: [dyn, kd],\n"
                     "      train: {epochs: 1, lr: 0.003, batch_size: 32, threads: 1}}\n"
                     "recipes:\n"
                     "  dyn: {steps: [quantize_dynamic]}\n"
                     "  kd: {steps: [{distill: {epochs: 1}}], formats: [onnx]}\n")
    out = tmp_path / "build"
    report = build_suite(suite, out, console=Console(quiet=True), workers=0)
    assert report.built == 5 and not report.failures, report.failures
    for art in report.artifacts:
        manifest = load_manifest(art.manifest_path)
        assert manifest.seed == 5
        assert manifest.training == {"epochs": 1, "lr": 0.003, "batch_size": 32,
                                     "weight_decay": 0.0, "optimizer": "adam",
                                     "schedule": "cosine", "weights_sha256": None}
        built_with = manifest.built_with or {}
        assert built_with["edgebench"] == __version__ and len(built_with["code_sha256"]) == 64
        for lib in ("torch", "onnxruntime", "litert-torch", "ai-edge-quantizer"):
            assert built_with["libraries"][lib] == metadata.version(lib)
    # Found in an audit: nothing said which CPU the host accuracy came from, though int8
    # kernels, and top-1 with them, differ between AVX2, VNNI and Arm CPUs.
    cpuinfo = probes.read_text("/proc/cpuinfo") or ""
    this_cpu = isa.kernel_flags(cpuinfo, platform.machine())["isa"]  # what a fingerprint says
    for art in report.artifacts:
        runtime = HOST_RUNTIME[art.format]
        assert load_manifest(art.manifest_path).host_run == {
            "isa": this_cpu, "cpu_model": probes.cpu_model(cpuinfo),
            "machine": platform.machine(), "runtime": runtime,
            "runtime_version": get_runtime(runtime).version(),
            "threads": HOST_OPTIONS["threads"]}, art.name
    kd = load_manifest(out / "m-kd.onnx.manifest.json")
    assert kd.lineage[0]["params"]["lr"] == 0.003  # the model's train.lr, as fit used it
    assert load_manifest(out / "m-dyn.tflite.manifest.json").lineage[0]["params"] == {}
    assert load_manifest(out / "m-dyn.onnx.manifest.json").lineage[0]["params"] == {
        "per_channel": False, "reduce_range": True}


def test_a_manifest_written_before_these_fields_still_loads(tmp_path: Path) -> None:
    import hashlib
    import json

    from harness.artifacts import load_manifest

    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    (tmp_path / "m.onnx.manifest.json").write_text(json.dumps({
        "name": "m", "format": "onnx", "path": "m.onnx", "size_bytes": 4,
        "sha256": hashlib.sha256(b"onnx").hexdigest(), "lineage": []}))
    old = load_manifest(tmp_path / "m.onnx.manifest.json")
    assert old.seed is None and old.training is None and old.built_with is None
    assert old.host_run is None


def _bitmaps(root: Path, seed: int) -> Path:
    """Two classes of uncompressed BMPs: another seed changes every pixel, no file's size."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.bmp")
    return root


@pytest.mark.slow
def test_images_changed_in_place_rebuild_what_was_trained_and_scored_on_them(
        tmp_path: Path) -> None:
    # Found in an audit: every image of an imagefolder dataset rewritten, the build said
    # "0 built, 1 reused"; the model stayed trained on the old images, and the test split the
    # device is sent (data/<dataset>/inputs.npy) was the old one.
    from harness.artifacts import load_manifest

    images = _bitmaps(tmp_path / "imgs", seed=0)
    suite = tmp_path / "mine.yaml"
    suite.write_text("seed: 0\nformats: [onnx]\n"
                     f"datasets: {{mine: {{type: imagefolder, path: '{images}', "
                     "image_size: 32, test_fraction: 0.4}}\n"
                     "models: {m: {arch: digits_cnn, dataset: mine, train: {epochs: 1}}}\n")
    out = tmp_path / "build"
    first = build_suite(suite, out, console=Console(quiet=True), workers=0)
    assert first.built == 1 and not first.failures, first.failures
    assert build_suite(suite, out, console=Console(quiet=True), workers=0).reused == 1
    before = load_manifest(out / "m.onnx.manifest.json")

    _bitmaps(images, seed=1)  # same names, same sizes, other pixels
    changed = build_suite(suite, out, console=Console(quiet=True), workers=0)
    assert (changed.built, changed.reused) == (1, 0)
    after = load_manifest(out / "m.onnx.manifest.json")
    assert before.dataset is not None and after.dataset is not None
    assert before.dataset.source_files is not None and after.dataset.source_files is not None
    assert after.dataset.source_files["sha256"] != before.dataset.source_files["sha256"]
    assert after.dataset.source_files["files"] == 10
    assert after.dataset.sha256["inputs"] != before.dataset.sha256["inputs"]
    assert after.sha256 != before.sha256  # trained again (the training cache is keyed too)
    assert build_suite(suite, out, console=Console(quiet=True), workers=0).reused == 1


def test_an_input_too_small_for_the_architecture_names_the_setting(tmp_path: Path) -> None:
    """Found: squeezenet1_1 at 16x16 failed inside torch ("Calculated output size:
    (256x0x0)"), naming neither model nor setting. One input goes through the fresh model
    first; the failure names the arch, the size and the field that sets it."""
    suite = tmp_path / "sq.yaml"
    suite.write_text("formats: [onnx]\nmodels: {sq: {arch: squeezenet1_1, input_size: 16}}\n")
    report = build_suite(suite, tmp_path / "build", console=Console(quiet=True), workers=0)
    ((name, message),) = report.failures
    assert name == "sq" and message.startswith(
        "squeezenet1_1 cannot take 16x16 inputs (models.sq.input_size): "), message
    assert "output size is too small" in message.lower()


def test_weights_for_other_classes_than_the_folders_are_refused_when_nothing_trains(
        tmp_path: Path) -> None:
    """Found by a user's own model: weights trained on three class folders, benched on a folder
    that had gained a fourth, built and measured with a fresh classifier, untrained, and no word
    said (top-1 18% on one run, 95% by luck on another). With `train.epochs` 0 that is refused
    naming the file, both class counts and the dataset; with training it is the fine-tuning
    from ImageNet that `pets.yaml` does."""
    images = _bitmaps(tmp_path / "imgs", seed=0)  # two class folders
    torch.manual_seed(0)
    weights = tmp_path / "three.pt"
    torch.save(build_model("digits_cnn", 3, 3).state_dict(), weights)
    suite = tmp_path / "mine.yaml"
    suite.write_text("seed: 0\nformats: [onnx]\n"
                     f"datasets: {{mine: {{type: imagefolder, path: '{images}', "
                     "image_size: 32}}\n"
                     f"models: {{m: {{arch: digits_cnn, dataset: mine, weights: '{weights}'}}}}\n")
    report = build_suite(suite, tmp_path / "build", console=Console(quiet=True), workers=0)
    ((name, message),) = report.failures
    assert name == "m" and message == (
        f"digits_cnn: weights file {weights} has a classifier for 3 classes (classifier.3.weight "
        f"[3, 128]) but dataset 'mine' (imagefolder:{images}) has 2 classes; a new classifier "
        "would stay untrained (train.epochs 0) and score chance: give the dataset the classes "
        "the weights were trained on, or set train.epochs to train one"), message
    assert not (tmp_path / "build" / "m.onnx").exists()


def test_a_baseline_failure_is_said_once_for_all_its_recipes(tmp_path: Path) -> None:
    """Found by a user: an empty class folder printed its 200-character reason four times, once
    for the baseline and once for each recipe; the recipes now point to it. The report keeps
    each entry's own reason."""
    import io

    images = _bitmaps(tmp_path / "imgs", seed=0)
    (images / "c").mkdir()  # a class with no image
    suite = tmp_path / "mine.yaml"
    suite.write_text("formats: [onnx]\n"
                     f"datasets: {{mine: {{type: imagefolder, path: '{images}', "
                     "image_size: 32}}\n"
                     "models: {m: {arch: digits_cnn, dataset: mine, train: {epochs: 1}, "
                     "recipes: [q, p]}}\n"
                     "recipes: {q: {steps: [quantize_dynamic]}, "
                     "p: {steps: [{prune_magnitude: {finetune_epochs: 0}}]}}\n")
    shown = io.StringIO()
    report = build_suite(suite, tmp_path / "build", workers=0,
                         console=Console(file=shown, width=400, color_system=None))
    reason = f"dataset 'mine': class folder {images / 'c'} holds no image"
    assert [name for name, _ in report.failures] == ["m", "m-q", "m-p"]
    assert all(message.startswith(reason) for _, message in report.failures)
    lines = [line for line in shown.getvalue().splitlines() if line.startswith("failed ")]
    assert lines[0].startswith(f"failed m: {reason}")
    assert lines[1:] == ["failed m-q: as m, above", "failed m-p: as m, above"]
