"""What a build reads decides whether an artifact is rebuilt: files named by step parameters."""

from __future__ import annotations

from pathlib import Path

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
