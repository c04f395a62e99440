"""Low-rank factorization: truncated SVD of linear layers, Tucker-2 and CP of convolutions.

A linear layer W (out x in) becomes two, in -> r -> out, from W's truncated SVD. A k x k conv
becomes 1x1 (in -> r_in), k x k (r_in -> r_out), 1x1 (r_out -> out) from the Tucker-2
decomposition of its kernel along the channel modes (computed by HOSVD: the leading left singular
vectors of the two channel unfoldings). The rank is either fixed (`rank`) or the smallest that
keeps an `energy` fraction of the squared singular values. With CP (Lebedev et al. 2015, "Speeding
up convolutional neural networks using fine-tuned CP-decomposition") a kh x kw conv becomes 1x1
(in -> R), depthwise kh x 1 and 1 x kw (R channels, each carrying the stride, padding and dilation
of its own axis) and 1x1 (R -> out, with the bias), from the rank-R CP decomposition of its kernel
(tensorly's ALS, seeded); CP has no singular values to keep a fraction of, so it takes `rank`
only. A layer is factorized only when that saves parameters; the ranks chosen (and CP's relative
reconstruction error) are reported in the lineage. Fine-tuning follows.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import tensorly as tl
import torch
from tensorly.decomposition import parafac
from torch import nn

from harness.compress.techniques import (
    TORCH,
    ParamError,
    in_range,
    learning_rate,
    positive_int,
    technique,
)
from harness.compress.train import StepContext, fit, progress


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


def _check_cp(p: dict[str, Any]) -> None:
    if p.get("rank") is None:
        raise ParamError("lowrank_cp needs rank, the number of CP components of each conv (an "
                         "integer >= 1; energy does not apply to CP)", "rank")
    positive_int(p, "rank")
    positive_int(p, "finetune_epochs", allow_zero=True)
    learning_rate(p)


# ALS sweeps, and the change of relative error per sweep under which they stop early (tensorly's
# default tol). A kernel of the rank asked is recovered to ~1e-7 within them (128 x 64 x 3 x 3 at
# rank 24 needs more than tensorly's default 100); a trained kernel, of higher rank, is still
# improving slowly at 200 (digits CNN, rank 32: 0.754 against 0.750 at 500 sweeps, 2.5x the
# time) and is fine-tuned afterwards anyway.
CP_SWEEPS, CP_TOL = 200, 1e-8


def cp_kernel(weight: torch.Tensor, rank: int, seed: int
              ) -> tuple[list[np.ndarray], float]:
    """The rank-`rank` CP factors of a conv kernel (out, in, kh, kw), the component weights
    folded into the `out` factor, and the relative error ||W - CP|| / ||W|| they leave."""
    w = weight.detach().cpu().double().numpy()
    norm = float(np.linalg.norm(w))
    if norm == 0.0:  # a kernel pruned away: ALS would fail on its singular Gram matrices
        return [np.zeros((n, rank)) for n in w.shape], 0.0
    # The numpy backend for this thread only, restored after: a caller's tensorly backend is not
    # changed. float64: on a kernel of the rank asked, ALS in float32 stalls at a relative error
    # of 3e-4 (round-off), in float64 it reaches 1e-7.
    with tl.backend_context("numpy", local_threadsafe=True), warnings.catch_warnings():
        # A rank above a mode's size (3 for a 3x3 kernel): tensorly's SVD start warns that it
        # fills the rest of that factor with noise from `random_state`, which is what we want.
        warnings.filterwarnings("ignore", "Trying to compute SVD with n_eigenvecs", UserWarning)
        cp = parafac(w, rank, n_iter_max=CP_SWEEPS, init="svd", tol=CP_TOL, random_state=seed)
        error = float(np.linalg.norm(w - tl.cp_to_tensor(cp))) / norm
    weights, factors = cp
    factors = [np.asarray(f) for f in factors]
    factors[0] = factors[0] * np.asarray(weights)[None, :]
    return factors, error


def _axis(value: Any, axis: int, other: int) -> Any:
    """A conv's stride, padding or dilation along one spatial axis (`other` along the other):
    a string padding ('same', 'valid') is kept as it is, for both axes."""
    if isinstance(value, str):
        return value
    return (value[0], other) if axis == 0 else (other, value[1])


def factorize_conv_cp(conv: nn.Conv2d, rank: int, seed: int
                      ) -> tuple[nn.Sequential, float] | None:
    """The CP form of `conv` at `rank` and its kernel's relative reconstruction error, or None
    when it would not save parameters."""
    out_c, in_c, kh, kw = conv.weight.shape
    if rank * (in_c + kh + kw + out_c) >= in_c * out_c * kh * kw:
        return None
    (a_out, a_in, a_h, a_w), error = cp_kernel(conv.weight, rank, seed)
    first = nn.Conv2d(in_c, rank, 1, bias=False)
    # Zero, reflect, replicate and circular padding each act on one axis at a time, so padding
    # rows before the vertical pass and columns before the horizontal one is the full padding.
    vertical = nn.Conv2d(rank, rank, (kh, 1), _axis(conv.stride, 0, 1),
                         _axis(conv.padding, 0, 0), _axis(conv.dilation, 0, 1), groups=rank,
                         bias=False, padding_mode=conv.padding_mode)
    horizontal = nn.Conv2d(rank, rank, (1, kw), _axis(conv.stride, 1, 1),
                           _axis(conv.padding, 1, 0), _axis(conv.dilation, 1, 1), groups=rank,
                           bias=False, padding_mode=conv.padding_mode)
    last = nn.Conv2d(rank, out_c, 1, bias=conv.bias is not None)
    seq = nn.Sequential(first, vertical, horizontal, last).to(conv.weight.device,
                                                               conv.weight.dtype)

    def put(param: torch.Tensor, value: np.ndarray) -> None:
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)).reshape(param.shape))

    with torch.no_grad():
        put(first.weight, a_in.T)  # R x in
        put(vertical.weight, a_h.T)  # R x kh
        put(horizontal.weight, a_w.T)  # R x kw
        put(last.weight, a_out)  # out x R
        if conv.bias is not None and last.bias is not None:
            last.bias.copy_(conv.bias.detach())
    return seq, error


@technique(
    "lowrank_cp", TORCH,
    defaults={"rank": None, "finetune_epochs": 3, "lr": 5e-4},
    label=lambda p: f"cp_r{p['rank']}",
    check=_check_cp,
)
def lowrank_cp(model: nn.Module, params: dict[str, Any], ctx: StepContext
               ) -> tuple[nn.Module, dict[str, Any]]:
    """CP decomposition of every k x k conv (groups 1) where it saves parameters, then fine-tune."""
    rank = int(params["rank"])
    ranks: dict[str, int] = {}
    errors: dict[str, float] = {}
    kept: list[str] = []
    convs = [(name, conv) for name, conv in model.named_modules()
             if isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.kernel_size != (1, 1)]
    if not convs:  # a step after another CP step, or a model of 1x1 convs
        raise ParamError("no k x k convolution (groups 1) is left to factorize: every one is "
                         "1x1, grouped or depthwise, or already factorized by an earlier step")
    # ALS takes seconds a layer (ResNet18's 16 took 3 minutes): a bar, where there was silence
    with progress(ctx.console, f"{ctx.entry}: cp factorization", len(convs)) as advance:
        for name, conv in convs:
            done = factorize_conv_cp(conv, rank, ctx.seed)
            if done is None:
                kept.append(name)
                advance(f"{name} kept")
                continue
            _replace(model, name, done[0])
            ranks[name], errors[name] = rank, float(f"{done[1]:.4g}")
            advance(f"{name} error {done[1]:.2f}")
    if not ranks:
        raise ParamError(f"no convolution gets smaller at CP rank {rank} (of {len(kept)} k x k "
                         f"convolutions: {', '.join(kept)})")
    fit(model, ctx, epochs=params["finetune_epochs"], lr=params["lr"],
        description="cp fine-tune")
    return model.eval(), {"ranks": ranks, "relative_error": errors, "kept": kept}


def pct_e(p: dict[str, Any]) -> str:
    return f"{round(100 * float(p['energy'])):d}"
