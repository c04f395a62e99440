"""Low-rank factorization: truncated SVD of linear layers, Tucker-2 of convolutions.

A linear layer W (out x in) becomes two, in -> r -> out, from W's truncated SVD. A k x k conv
becomes 1x1 (in -> r_in), k x k (r_in -> r_out), 1x1 (r_out -> out) from the Tucker-2
decomposition of its kernel along the channel modes (computed by HOSVD: the leading left singular
vectors of the two channel unfoldings). The rank is either fixed (`rank`) or the smallest that
keeps an `energy` fraction of the squared singular values. A layer is factorized only when that
saves parameters; the ranks chosen are reported in the lineage. Fine-tuning follows.
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
    positive_int,
    technique,
)
from harness.compress.train import StepContext, fit


def _check(p: dict[str, Any]) -> None:
    if (p.get("rank") is None) == (p.get("energy") is None):
        raise ParamError("give exactly one of rank (an integer >= 1) or energy (a fraction)")
    if p.get("rank") is not None:
        positive_int(p, "rank")
    else:
        in_range(p, "energy", 0.0, 1.0, low_open=True)
    positive_int(p, "finetune_epochs", allow_zero=True)
    learning_rate(p)


def _rank(singular: torch.Tensor, params: dict[str, Any]) -> int:
    if params.get("rank") is not None:
        return min(int(params["rank"]), len(singular))
    energy = torch.cumsum(singular**2, 0) / torch.sum(singular**2)
    return int(torch.searchsorted(energy, torch.tensor(float(params["energy"])) - 1e-7)) + 1


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def factorize_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    u, s, vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
    root = torch.sqrt(s[:rank])
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root[None, :])
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


@technique(
    "lowrank_svd", TORCH,
    defaults={"rank": None, "energy": None, "finetune_epochs": 3, "lr": 5e-4},
    label=lambda p: f"svd_r{p['rank']}" if p.get("rank") else f"svd_e{pct_e(p)}",
    check=_check,
)
def lowrank_svd(model: nn.Module, params: dict[str, Any], ctx: StepContext
                ) -> tuple[nn.Module, dict[str, Any]]:
    """Truncated SVD of every linear layer where it saves parameters, then fine-tune."""
    ranks: dict[str, int] = {}
    for name, layer in list(model.named_modules()):
        if not isinstance(layer, nn.Linear):
            continue
        s = torch.linalg.svdvals(layer.weight.detach())
        r = _rank(s, params)
        if r * (layer.in_features + layer.out_features) >= layer.in_features * layer.out_features:
            continue
        _replace(model, name, factorize_linear(layer, r))
        ranks[name] = r
    if not ranks:
        raise ParamError("no linear layer gets smaller at this rank/energy")
    fit(model, ctx, epochs=params["finetune_epochs"], lr=params["lr"],
        description="svd fine-tune")
    return model.eval(), {"ranks": ranks}


def _leading(unfolded: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    u, s, _ = torch.linalg.svd(unfolded, full_matrices=False)
    return u[:, :_rank(s, params)]


def factorize_conv(conv: nn.Conv2d, params: dict[str, Any]) -> nn.Sequential | None:
    """Tucker-2 of `conv`'s kernel, or None when it would not save parameters."""
    w = conv.weight.detach()  # out, in, kh, kw
    out_c, in_c, kh, kw = w.shape
    u_out = _leading(w.reshape(out_c, -1), params)  # out x r_out
    u_in = _leading(w.transpose(0, 1).reshape(in_c, -1), params)  # in x r_in
    r_out, r_in = u_out.shape[1], u_in.shape[1]
    if in_c * r_in + r_in * r_out * kh * kw + r_out * out_c >= in_c * out_c * kh * kw:
        return None
    core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)  # r_out x r_in x kh x kw
    first = nn.Conv2d(in_c, r_in, 1, bias=False)
    middle = nn.Conv2d(r_in, r_out, conv.kernel_size, conv.stride,  # type: ignore[arg-type]
                       conv.padding, conv.dilation, bias=False)  # type: ignore[arg-type]
    last = nn.Conv2d(r_out, out_c, 1, bias=conv.bias is not None)
    with torch.no_grad():
        first.weight.copy_(u_in.T[:, :, None, None])
        middle.weight.copy_(core)
        last.weight.copy_(u_out[:, :, None, None])
        if conv.bias is not None and last.bias is not None:
            last.bias.copy_(conv.bias.detach())
    return nn.Sequential(first, middle, last)


@technique(
    "lowrank_tucker", TORCH,
    defaults={"rank": None, "energy": None, "finetune_epochs": 3, "lr": 5e-4},
    label=lambda p: f"tucker_r{p['rank']}" if p.get("rank") else f"tucker_e{pct_e(p)}",
    check=_check,
)
def lowrank_tucker(model: nn.Module, params: dict[str, Any], ctx: StepContext
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Tucker-2 decomposition of every k x k conv (groups 1) where it saves parameters."""
    ranks: dict[str, list[int]] = {}
    for name, conv in list(model.named_modules()):
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or conv.kernel_size == (1, 1):
            continue
        new = factorize_conv(conv, params)
        if new is None:
            continue
        _replace(model, name, new)
        first, middle = new[0], new[1]
        assert isinstance(first, nn.Conv2d) and isinstance(middle, nn.Conv2d)
        ranks[name] = [first.out_channels, middle.out_channels]
    if not ranks:
        raise ParamError("no convolution gets smaller at this rank/energy")
    fit(model, ctx, epochs=params["finetune_epochs"], lr=params["lr"],
        description="tucker fine-tune")
    return model.eval(), {"ranks": ranks}


def pct_e(p: dict[str, Any]) -> str:
    return f"{round(100 * float(p['energy'])):d}"
