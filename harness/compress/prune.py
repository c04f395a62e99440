"""Network pruning: structured channel pruning with dependency graphs, and magnitude sparsity.

Structured pruning uses torch-pruning's dependency graph, so removing a conv's output channels
also removes the matching BatchNorm entries and the next layer's input channels, residual groups
included: the exported graph really has fewer channels, parameters and MACs. Unstructured
magnitude pruning zeroes the smallest weights globally and keeps them at zero while fine-tuning;
the graph stays dense (the file and MACs do not shrink unless a runtime exploits sparsity), and
the sparsity reached is reported in the lineage.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.utils.prune as tprune
import torch_pruning as tp
from torch import nn

from harness.compress.techniques import (
    TORCH,
    ParamError,
    flag,
    in_range,
    learning_rate,
    one_of,
    pct,
    positive_int,
    technique,
    unless_none,
)
from harness.compress.train import StepContext, count_params, fit
from harness.errors import EdgebenchError

IMPORTANCE = ("l1", "l2", "random", "bn_scale", "lamp", "fpgm")


def _importance(name: str) -> tp.importance.Importance:
    return {
        "l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "l2": lambda: tp.importance.MagnitudeImportance(p=2),
        "random": tp.importance.RandomImportance,
        "bn_scale": tp.importance.BNScaleImportance,
        "lamp": tp.importance.LAMPImportance,
        "fpgm": tp.importance.FPGMImportance,
    }[name]()


def _classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The layers whose outputs are the class logits: their output width must not change."""
    found: list[nn.Module] = [m for m in model.modules()
             if (isinstance(m, nn.Linear) and m.out_features == num_classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]
    return found[-1:]


def _check_structured(p: dict[str, Any]) -> None:
    # open at 0: pruning nothing failed at build as "removed nothing (no prunable channel
    # groups in this model?)", which blamed the model
    in_range(p, "ratio", 0.0, 1.0, low_open=True, high_open=True)
    one_of(p, "importance", IMPORTANCE)
    positive_int(p, "finetune_epochs", allow_zero=True)
    learning_rate(p)
    unless_none(positive_int, p, "round_to")
    flag(p, "global_pruning")


@technique(
    "prune_structured", TORCH,
    defaults={"ratio": 0.5, "importance": "l1", "finetune_epochs": 3, "lr": 5e-4,
              "round_to": None, "global_pruning": False},
    label=lambda p: f"prune{pct(p['ratio'])}",
    check=_check_structured,
)
def prune_structured(model: nn.Module, params: dict[str, Any], ctx: StepContext
                     ) -> tuple[nn.Module, dict[str, Any]]:
    """Remove `ratio` of the channels of every prunable layer (dependency-aware), then fine-tune."""
    model = model.cpu().eval()
    before = count_params(model)
    torch.manual_seed(ctx.seed)
    example = torch.zeros(ctx.input_shape)
    try:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=_importance(params["importance"]),
            pruning_ratio=float(params["ratio"]),
            ignored_layers=_classifier_layers(model, ctx.num_classes),
            round_to=params["round_to"], global_pruning=bool(params["global_pruning"]),
        )
        pruner.step()
    except Exception as err:  # the dependency graph's own failures are terse
        raise EdgebenchError(
            "torch-pruning could not prune this model's dependency graph (channel shuffles and "
            f"other reshapes across channels are not supported): {type(err).__name__}: {err}"
        ) from err
    after = count_params(model)
    if after >= before:
        raise ParamError(f"structured pruning at ratio {params['ratio']} removed nothing "
                         "(no prunable channel groups in this model?)")
    fit(model, ctx, epochs=params["finetune_epochs"], lr=params["lr"],
        description=f"prune {pct(params['ratio'])}% fine-tune")
    return model.eval(), {"params_before": before, "params_after": after}


def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros among the weights of conv and linear layers."""
    zeros = total = 0
    for module, name in _prunable(model):
        w = getattr(module, name)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def _check_magnitude(p: dict[str, Any]) -> None:
    # open at 0: zeroing nothing built the baseline again under a "sparse0" label
    in_range(p, "sparsity", 0.0, 1.0, low_open=True, high_open=True)
    positive_int(p, "finetune_epochs", allow_zero=True)
    learning_rate(p)


@technique(
    "prune_magnitude", TORCH,
    defaults={"sparsity": 0.7, "finetune_epochs": 2, "lr": 5e-4},
    label=lambda p: f"sparse{pct(p['sparsity'])}",
    check=_check_magnitude,
)
def prune_magnitude(model: nn.Module, params: dict[str, Any], ctx: StepContext
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Zero the globally smallest-magnitude conv/linear weights, fine-tune with the mask held."""
    model = model.cpu().eval()
    targets = _prunable(model)
    tprune.global_unstructured(targets, pruning_method=tprune.L1Unstructured,
                               amount=float(params["sparsity"]))
    fit(model, ctx, epochs=params["finetune_epochs"], lr=params["lr"],
        description=f"sparsity {pct(params['sparsity'])}% fine-tune")
    for module, name in targets:
        tprune.remove(module, name)
    return model.eval(), {"sparsity_reached": round(sparsity(model), 4)}
