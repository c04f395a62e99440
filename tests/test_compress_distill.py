"""Distillation trains the student named, and the student really learns from the teacher."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from harness.artifacts import load_manifest
from harness.compress.build import build_suite
from harness.compress.distill import distill
from harness.compress.techniques import TECHNIQUES, ParamError, load_all
from harness.compress.train import StepContext, count_params, predict
from harness.zoo import build_model, load_dataset


class AlwaysThree(nn.Module):
    """A teacher that is confidently wrong: every image is a 3. Its unused parameters make it
    larger than the student, which a teacher must be."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(100_000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full((x.shape[0], 10), -5.0)
        logits[:, 3] = 5.0
        return logits


@pytest.fixture(scope="module")
def ctx() -> StepContext:
    data = load_dataset("digits", "digits", {}, seed=0)
    return StepContext("test", data, (1, 1, 32, 32), 10, 0,
                       {"lr": 0.003, "batch_size": 64, "threads": 1}, Console(quiet=True))


def test_student_follows_the_teacher_not_only_the_labels(ctx: StepContext) -> None:
    load_all()
    x, y = ctx.data.x_test, ctx.data.y_test  # type: ignore[union-attr]
    pure_kd = TECHNIQUES.get("distill").resolve({"alpha": 1.0, "epochs": 2})
    student, info = distill(AlwaysThree(), pure_kd, ctx)
    assert count_params(student) == count_params(build_model("digits_cnn_small", 10, 1))
    assert info["student_params"] == count_params(student)
    assert np.mean(predict(student, x).argmax(1) == 3) > 0.9  # it learnt the teacher's answer

    labels_only = TECHNIQUES.get("distill").resolve({"alpha": 0.0, "epochs": 2})
    student, _ = distill(AlwaysThree(), labels_only, ctx)
    assert np.mean(predict(student, x).argmax(1) == y) > 0.8  # alpha 0: plain supervised


def test_distill_parameters_are_checked() -> None:
    load_all()
    tech = TECHNIQUES.get("distill")
    with pytest.raises(ParamError, match="alpha"):
        tech.resolve({"alpha": 1.5})
    with pytest.raises(ParamError, match="temperature"):
        tech.resolve({"temperature": 0})
    with pytest.raises(ParamError, match="unknown model 'tinynet'; known: .*resnet18") as err:
        tech.resolve({"student": "tinynet"})
    assert err.value.param == "student"  # named as a field of the suite


class _TrainedOnNothing(nn.Module):
    """A teacher of `n` parameters that fails if it is ever run: a refused student must be
    refused before a single batch trains."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the student trained against this teacher")


def test_a_student_no_smaller_than_its_teacher_is_refused_before_it_trains(
        ctx: StepContext) -> None:
    """Found: the default student, digits_cnn_small, distilled from a user's own smaller model
    made a "compressed" variant larger than the model, and nothing said so."""
    tech = load_all().get("distill")
    small = count_params(build_model("digits_cnn_small", 10, 1))
    with pytest.raises(ParamError) as err:
        distill(_TrainedOnNothing(small - 1), tech.resolve({"epochs": 1}), ctx)
    assert err.value.param == "student"
    assert str(err.value).startswith(
        f"digits_cnn_small (the default) has {small:,} parameters, more than the {small - 1:,} "
        "of its teacher: the distilled variant would be no compression; ")
    with pytest.raises(ParamError, match=f"^digits_cnn_small \\(the default\\) has {small:,} "
                                         f"parameters, as many as the {small:,} of its teacher"):
        distill(_TrainedOnNothing(small), tech.resolve({"epochs": 1}), ctx)


def test_the_refusal_lists_the_registered_students_with_fewer_parameters(
        ctx: StepContext) -> None:
    tech = load_all().get("distill")
    with pytest.raises(ParamError) as err:
        distill(_TrainedOnNothing(200_000), tech.resolve({"student": "resnet18"}), ctx)
    message = str(err.value)
    assert message.startswith("resnet18 has 11,175,370 parameters, more than the 200,000 of its "
                              "teacher: the distilled variant would be no compression; name a "
                              "smaller one in student:, for 32x32 inputs one of "), message
    # fewest first; shufflenet_v2_x0_5 (351,610) has more than the teacher
    assert "digits_cnn_small (39,426), digits_cnn (155,898)" in message
    assert "shufflenet" not in message and "resnet18 (" not in message


USERNET = """
from torch import nn

from harness.zoo.models import register_model


@register_model("usernet", input_size=32)
def usernet(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
"""


@pytest.mark.slow
def test_the_default_student_of_a_smaller_user_model_fails_that_entry_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's own model (their plugin's arch, their weights file) with the demo's distill
    recipe: that entry fails before it trains, naming the field, the model and both sizes; the
    user model's baseline and the demo model's distillation build."""
    from harness.compress import suite as suite_module
    from harness.compress.suite import load_suite
    from harness.zoo.models import MODELS

    # the plugin's arch is this test's alone: the registry and the imported plugins as they
    # were once it ends, so that no later test of this process sees `usernet`
    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))
    monkeypatch.setattr(MODELS, "_lazy", dict(MODELS._lazy))
    monkeypatch.setattr(suite_module, "_PLUGINS", {})
    monkeypatch.chdir(tmp_path)  # the user's folder, where their relative paths start
    (tmp_path / "mynets.py").write_text(USERNET)
    (tmp_path / "arch.yaml").write_text("plugins: [mynets.py]\nmodels: {m: {arch: usernet}}\n")
    load_suite(tmp_path / "arch.yaml")  # imports the plugin, as edgebench does
    torch.manual_seed(0)
    user_model = MODELS.get("usernet").build(10, 1)
    torch.save(user_model.state_dict(), tmp_path / "mine.pt")
    teacher_n = count_params(user_model)
    suite = tmp_path / "mine.yaml"
    suite.write_text("seed: 0\nformats: [onnx]\nplugins: [mynets.py]\n"
                     # 180 training images: one epoch of distillation, quickly
                     "datasets: {digits: {type: digits, test_fraction: 0.9}}\n"
                     "models:\n"
                     "  mine: {arch: usernet, dataset: digits, weights: mine.pt, recipes: [kd]}\n"
                     "  demo: {arch: digits_cnn, dataset: digits, recipes: [kd]}\n"
                     "recipes: {kd: {steps: [{distill: {epochs: 1}}]}}\n")
    shown = io.StringIO()
    report = build_suite(suite, tmp_path / "build", workers=0,
                         console=Console(file=shown, width=400, color_system=None))

    ((entry, message),) = report.failures
    assert entry == "mine-kd"
    small = count_params(build_model("digits_cnn_small", 10, 1))
    assert message.startswith(
        f"recipes.kd.steps[0].distill.student (model mine): digits_cnn_small (the default) has "
        f"{small:,} parameters, more than the {teacher_n:,} of its teacher: the distilled "
        "variant would be no compression; "), message
    assert "student:" in message.split("compression; ")[1]  # and what to do
    assert "mine-kd: distill" not in shown.getvalue()  # refused before its first epoch
    assert not (tmp_path / "build" / "mine-kd.onnx").exists()
    assert sorted(a.name for a in report.artifacts) == ["demo", "demo-kd", "mine"]
    distilled = load_manifest(tmp_path / "build" / "demo-kd.onnx.manifest.json")
    result = distilled.lineage[0]["result"]
    assert result["student_params"] == distilled.params == small
    assert result["teacher_params"] == count_params(build_model("digits_cnn", 10, 1))
