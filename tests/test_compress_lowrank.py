"""Low-rank factorization respects the rank asked and approximates the layer it replaces."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console
from torch import nn

from harness.compress.lowrank import factorize_conv, factorize_linear, lowrank_svd, lowrank_tucker
from harness.compress.techniques import TECHNIQUES, ParamError, load_all
from harness.compress.train import StepContext, count_macs, count_params
from harness.zoo import build_model


def _ctx() -> StepContext:
    return StepContext("test", None, (1, 1, 32, 32), 10, 0, {}, Console(quiet=True))


def _low_rank_linear(out_f: int, in_f: int, rank: int) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(in_f, out_f)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out_f, rank) @ torch.randn(rank, in_f))
    return layer


def test_svd_rank_is_respected_and_exact_for_low_rank_weights() -> None:
    layer = _low_rank_linear(64, 96, 8)
    seq = factorize_linear(layer, 8)
    first, second = seq[0], seq[1]
    assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
    assert first.out_features == 8 and second.in_features == 8
    product = second.weight @ first.weight
    assert int(torch.linalg.matrix_rank(product)) == 8
    x = torch.randn(5, 96)
    torch.testing.assert_close(seq(x), layer(x), atol=1e-3, rtol=1e-3)
    truncated = factorize_linear(layer, 4)
    assert int(torch.linalg.matrix_rank(truncated[1].weight @ truncated[0].weight)) == 4


def test_svd_step_on_a_model_reports_ranks_and_saves_params() -> None:
    load_all()
    model = build_model("digits_cnn", 10, 1)
    before = count_params(model)
    params = TECHNIQUES.get("lowrank_svd").resolve({"rank": 16, "finetune_epochs": 0})
    out, info = lowrank_svd(model, params, _ctx())
    assert info["ranks"] and set(info["ranks"].values()) == {16}
    assert count_params(out) < before
    assert out(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_svd_energy_picks_the_smallest_sufficient_rank() -> None:
    load_all()
    model = nn.Sequential(nn.Flatten(), _low_rank_linear(64, 1024, 6), nn.Linear(64, 10))
    params = TECHNIQUES.get("lowrank_svd").resolve({"energy": 0.999999, "finetune_epochs": 0})
    _, info = lowrank_svd(model, params, _ctx())
    assert info["ranks"]["1"] == 6


def test_tucker_conv_ranks_and_approximation() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 48, 3, padding=1, stride=2)
    with torch.no_grad():  # a kernel of channel ranks (8, 8): Tucker-2 at rank 8 is exact
        core, u_out, u_in = torch.randn(8, 8, 3, 3), torch.randn(48, 8), torch.randn(32, 8)
        conv.weight.copy_(torch.einsum("rskl,or,is->oikl", core, u_out, u_in))
    seq = factorize_conv(conv, {"rank": 8})
    assert seq is not None
    first, middle, last = seq
    assert isinstance(first, nn.Conv2d) and isinstance(middle, nn.Conv2d)
    assert isinstance(last, nn.Conv2d)
    assert (first.out_channels, middle.in_channels, middle.out_channels) == (8, 8, 8)
    assert middle.stride == (2, 2) and last.out_channels == 48
    x = torch.randn(2, 32, 16, 16)
    torch.testing.assert_close(seq(x), conv(x), atol=1e-3, rtol=1e-3)
    lossy = factorize_conv(conv, {"rank": 4})
    assert lossy is not None and not torch.allclose(lossy(x), conv(x), atol=1e-2)
    # A factorization that saves nothing is not applied.
    assert factorize_conv(nn.Conv2d(8, 64, 3, padding=1), {"rank": 64}) is None


def test_tucker_step_reduces_macs_on_a_model() -> None:
    load_all()
    model = build_model("digits_cnn", 10, 1)
    before = count_macs(model, (1, 1, 32, 32))
    params = TECHNIQUES.get("lowrank_tucker").resolve({"rank": 8, "finetune_epochs": 0})
    out, info = lowrank_tucker(model, params, _ctx())
    assert all(r == [8, 8] for r in info["ranks"].values())
    assert count_macs(out, (1, 1, 32, 32)) < before


@pytest.mark.parametrize("params", [{"rank": 0}, {"energy": 1.5}, {"rank": 4, "energy": 0.5}, {}])
def test_bad_rank_parameters(params: dict) -> None:
    load_all()
    with pytest.raises(ParamError):
        TECHNIQUES.get("lowrank_svd").resolve(params)
    with pytest.raises(ParamError):
        TECHNIQUES.get("lowrank_tucker").resolve(params)
