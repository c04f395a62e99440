"""Knowledge distillation: train a smaller student on the current model's softened logits.

The incoming model is the teacher; the step's output is the student, a registered zoo model
(`student`), so a chain `distill -> prune -> quantize` continues from the student. Logit
distillation after Hinton et al.: `alpha` weighs the KL term at temperature `temperature`
against plain cross-entropy on the labels.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from harness.compress.techniques import (
    TORCH,
    ParamError,
    in_range,
    learning_rate,
    param_path,
    positive_int,
    technique,
    text,
    unless_none,
)
from harness.compress.train import StepContext, count_params, fit, seed_everything
from harness.errors import UnknownNameError
from harness.zoo.models import MODELS, build_model


def _check(p: dict[str, Any]) -> None:
    if not isinstance(p.get("student"), str):
        raise ParamError(f"student must name a zoo model, got {p.get('student')!r}", "student")
    if p["student"] not in MODELS:
        raise ParamError(str(UnknownNameError("model", p["student"], MODELS.names())), "student")
    unless_none(text, p, "student_weights")
    in_range(p, "temperature", 0.0, 100.0, low_open=True)
    in_range(p, "alpha", 0.0, 1.0)
    positive_int(p, "epochs")
    unless_none(learning_rate, p, "lr")


@technique(
    "distill", TORCH,
    defaults={"student": "digits_cnn_small", "student_weights": None, "temperature": 4.0,
              "alpha": 0.7, "epochs": 10, "lr": None},
    label=lambda p: "distill",
    check=_check,
    files=("student_weights",),
    from_train=("lr",),
)
def distill(teacher: nn.Module, params: dict[str, Any], ctx: StepContext
            ) -> tuple[nn.Module, dict[str, Any]]:
    """Logit distillation teacher -> student (temperature, alpha, epochs)."""
    seed_everything(ctx.seed)
    student = build_model(params["student"], ctx.num_classes, ctx.input_shape[1],
                          param_path(params["student_weights"])
                          if params["student_weights"] else None).train()
    fit(student, ctx, epochs=params["epochs"], lr=params["lr"], teacher=teacher.eval(),
        temperature=float(params["temperature"]), alpha=float(params["alpha"]),
        description=f"distill -> {params['student']}")
    return student, {"teacher_params": count_params(teacher),
                     "student_params": count_params(student)}
