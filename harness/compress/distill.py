"""Knowledge distillation: train a smaller student on the current model's softened logits.

The incoming model is the teacher; the step's output is the student, a registered zoo model
(`student`), so a chain `distill -> prune -> quantize` continues from the student. Logit
distillation after Hinton et al.: `alpha` weighs the KL term at temperature `temperature`
against plain cross-entropy on the labels. A student with as many parameters as its teacher or
more is refused before it trains: the default, digits_cnn_small, is small beside a ResNet but
not beside a user's own small model, and its "compressed" variant was larger than the model.
"""

from __future__ import annotations

from typing import Any

import torch
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
from harness.zoo.models import MODELS, Builder, build_model


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


DEFAULTS: dict[str, Any] = {"student": "digits_cnn_small", "student_weights": None,
                            "temperature": 4.0, "alpha": 0.7, "epochs": 10, "lr": None}


@technique(
    "distill", TORCH,
    defaults=DEFAULTS,
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
    _refuse_no_smaller(params["student"], count_params(student), count_params(teacher), ctx)
    fit(student, ctx, epochs=params["epochs"], lr=params["lr"], teacher=teacher.eval(),
        temperature=float(params["temperature"]), alpha=float(params["alpha"]),
        description=f"distill -> {params['student']}")
    return student, {"teacher_params": count_params(teacher),
                     "student_params": count_params(student)}


def _refuse_no_smaller(student: str, student_n: int, teacher_n: int, ctx: StepContext) -> None:
    """ParamError naming `student` where it has no fewer parameters than the teacher, with the
    registered archs that have fewer for these inputs: what to name instead. Parameters, not
    bytes: they are what the manifest records (`teacher_params`, `student_params`), and one
    model's bytes differ between formats."""
    if student_n < teacher_n:
        return
    default = " (the default)" if student == DEFAULTS["student"] else ""
    than = "as many as" if student_n == teacher_n else "more than"
    inputs = f"{ctx.input_shape[2]}x{ctx.input_shape[3]} inputs"
    fewer = [f"{name} ({n:,})" for name, n in _archs_with_fewer(teacher_n, ctx)]
    instead = (f"name a smaller one in student:, for {inputs} one of {', '.join(fewer)}"
               if fewer else f"no registered arch has fewer for {inputs}: register a smaller "
               "one in a plugins: file and name it in student:")
    raise ParamError(f"{student}{default} has {student_n:,} parameters, {than} the "
                     f"{teacher_n:,} of its teacher: the distilled variant would be no "
                     f"compression; {instead}", "student")


def _archs_with_fewer(teacher_n: int, ctx: StepContext) -> list[tuple[str, int]]:
    """The registered archs that take the context's inputs and have fewer than `teacher_n`
    parameters, fewest first. Counted on torch's meta device, which allocates and initialises
    nothing (all the zoo's took 1.4 s built for real); an arch whose builder needs real tensors
    (torchvision's RegNet computes its widths with them) is built for real."""
    side = ctx.input_shape[2]
    found = []
    for name in MODELS.names():
        spec = MODELS.get(name)
        if spec.fixed_input_size and spec.input_size != side:
            continue
        try:
            n = _count_built(spec.build, ctx.num_classes, ctx.input_shape[1])
        except Exception:  # a plugin's builder that fails is no student to suggest
            continue
        if n < teacher_n:
            found.append((name, n))
    return sorted(found, key=lambda item: item[1])


def _count_built(build: Builder, num_classes: int, in_channels: int) -> int:
    try:
        with torch.device("meta"):
            return count_params(build(num_classes, in_channels))
    except Exception:
        return count_params(build(num_classes, in_channels))
