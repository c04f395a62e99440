"""Distillation trains the student named, and the student really learns from the teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from harness.compress.distill import distill
from harness.compress.techniques import TECHNIQUES, ParamError, load_all
from harness.compress.train import StepContext, count_params, predict
from harness.zoo import build_model, load_dataset


class AlwaysThree(nn.Module):
    """A teacher that is confidently wrong: every image is a 3."""

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
