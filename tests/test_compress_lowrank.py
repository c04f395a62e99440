"""Low-rank factorization respects the rank asked and approximates the layer it replaces."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import tensorly as tl
import torch
from rich.console import Console
from torch import nn

from harness.compress.build import build_suite
from harness.compress.lowrank import (
    factorize_conv,
    factorize_conv_cp,
    factorize_linear,
    lowrank_cp,
    lowrank_svd,
    lowrank_tucker,
)
from harness.compress.suite import load_suite
from harness.compress.techniques import TECHNIQUES, ParamError, load_all
from harness.compress.train import StepContext, count_macs, count_params
from harness.errors import ConfigError
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


def _cp_conv(in_c: int, out_c: int, rank: int, **geometry: object) -> nn.Conv2d:
    """A 3x3 conv whose kernel is exactly of CP rank `rank`, scaled so outputs are about 1."""
    torch.manual_seed(0)
    conv = nn.Conv2d(in_c, out_c, 3, **geometry)  # type: ignore[arg-type]
    with torch.no_grad():
        factors = [torch.randn(n, rank) for n in (out_c, in_c, 3, 3)]
        kernel = torch.einsum("or,ir,hr,wr->oihw", *factors)
        conv.weight.copy_(kernel / kernel.std() / (9 * in_c) ** 0.5)
    return conv


@pytest.mark.parametrize("geometry", [
    {"stride": 2, "padding": 1},
    {"dilation": 2, "padding": 2},
    # each axis its own: swapping them between the two depthwise convs changes the output's shape
    {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2)},
    {"padding": 1, "padding_mode": "reflect"},
])
def test_cp_reproduces_a_kernel_of_that_rank(geometry: dict) -> None:
    conv = _cp_conv(16, 32, 6, **geometry)
    done = factorize_conv_cp(conv, 6, seed=0)
    assert done is not None
    seq, error = done
    first, vertical, horizontal, last = seq
    assert isinstance(first, nn.Conv2d) and isinstance(last, nn.Conv2d)
    assert isinstance(vertical, nn.Conv2d) and isinstance(horizontal, nn.Conv2d)
    assert (first.in_channels, first.out_channels, last.in_channels) == (16, 6, 6)
    assert vertical.kernel_size == (3, 1) and horizontal.kernel_size == (1, 3)
    assert vertical.groups == horizontal.groups == 6 and last.out_channels == 32
    assert error < 1e-5
    assert count_params(seq) < count_params(conv)
    x = torch.randn(2, 16, 17, 15)
    torch.testing.assert_close(seq(x), conv(x), atol=1e-4, rtol=1e-4)
    lossy = factorize_conv_cp(conv, 2, seed=0)
    assert lossy is not None and lossy[1] > 0.1
    assert not torch.allclose(lossy[0](x), conv(x), atol=1e-2)


def test_cp_keeps_the_bias() -> None:
    conv = _cp_conv(8, 16, 3, padding=1)
    with torch.no_grad():
        conv.bias.copy_(torch.arange(16.0))  # type: ignore[union-attr]
    done = factorize_conv_cp(conv, 3, seed=0)
    assert done is not None
    x = torch.randn(1, 8, 9, 9)
    torch.testing.assert_close(done[0](x), conv(x), atol=1e-4, rtol=1e-4)


def test_cp_of_a_zero_kernel_is_zero() -> None:
    # a conv pruned to nothing by an earlier step: ALS alone fails on it (a singular system)
    conv = nn.Conv2d(16, 32, 3, bias=False)
    nn.init.zeros_(conv.weight)
    done = factorize_conv_cp(conv, 4, seed=0)
    assert done is not None and done[1] == 0.0
    assert not done[0](torch.randn(1, 16, 5, 5)).any()


def test_cp_step_reports_ranks_errors_and_leaves_layers_it_would_not_shrink() -> None:
    load_all()
    model = build_model("digits_cnn", 10, 1)
    before = count_params(model)
    stem = model.features[0]
    params = TECHNIQUES.get("lowrank_cp").resolve({"rank": 8, "finetune_epochs": 0})
    console = Console(record=True, width=120, file=io.StringIO())
    out, info = lowrank_cp(model, params, StepContext("cnn-cp", None, (1, 1, 32, 32), 10, 0, {},
                                                      console))
    # a bar over the layers, each named as it is done (ResNet18's 3 minutes were silent)
    shown = console.export_text()
    assert "cnn-cp: cp factorization" in shown and "3/3" in shown
    assert "features.8 error 0." in shown
    # 1 -> 16 channels: 144 weights whole, 8 * (1 + 3 + 3 + 16) = 184 as CP
    assert info["kept"] == ["features.0"] and out.features[0] is stem
    assert info["ranks"] == {"features.4": 8, "features.8": 8}
    assert set(info["relative_error"]) == set(info["ranks"])
    assert all(0.0 < e < 1.0 for e in info["relative_error"].values())
    assert count_params(out) < before
    assert out(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_cp_leaves_grouped_and_pointwise_convs_alone() -> None:
    load_all()
    model = nn.Sequential(nn.Conv2d(32, 32, 3, groups=32), nn.Conv2d(32, 64, 1),
                          _cp_conv(64, 64, 4))
    params = TECHNIQUES.get("lowrank_cp").resolve({"rank": 4, "finetune_epochs": 0})
    out, info = lowrank_cp(model, params, _ctx())
    assert info["ranks"] == {"2": 4} and info["kept"] == []
    assert isinstance(out[0], nn.Conv2d) and isinstance(out[1], nn.Conv2d)
    with pytest.raises(ParamError, match=r"no convolution gets smaller at CP rank 64 \(of 1 k x k "
                       r"convolutions: 0\)"):
        lowrank_cp(nn.Sequential(nn.Conv2d(1, 16, 3), nn.Conv2d(32, 32, 3, groups=32)),
                   TECHNIQUES.get("lowrank_cp").resolve({"rank": 64, "finetune_epochs": 0}),
                   _ctx())
    # a second CP step finds only the factors of the first: said so, not "rank 4 saves nothing"
    with pytest.raises(ParamError, match="no k x k convolution .groups 1. is left to factorize"):
        lowrank_cp(out, params, _ctx())


def test_cp_is_seeded_and_leaves_the_tensorly_backend_alone() -> None:
    load_all()
    params = TECHNIQUES.get("lowrank_cp").resolve({"rank": 6, "finetune_epochs": 0})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 32, 3))

    def weights(seed: int) -> list[torch.Tensor]:
        ctx = StepContext("test", None, (1, 16, 8, 8), 10, seed, {}, Console(quiet=True))
        out, _ = lowrank_cp(copy.deepcopy(model), params, ctx)
        return [p.detach().clone() for p in out.parameters()]

    with tl.backend_context("pytorch"):
        first = weights(0)
        assert tl.get_backend() == "pytorch"
    # rank 6 > 3, the size of a kernel's spatial modes: ALS starts from seeded noise there
    assert all(torch.equal(a, b) for a, b in zip(first, weights(0), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, weights(1), strict=True))


@pytest.mark.parametrize(("params", "field"), [
    ({}, "rank"), ({"rank": 0}, "rank"), ({"rank": 2.5}, "rank"), ({"rank": True}, "rank"),
    ({"rank": 4, "finetune_epochs": -1}, "finetune_epochs"), ({"rank": 4, "lr": 0}, "lr"),
])
def test_bad_cp_parameters(params: dict, field: str) -> None:
    load_all()
    with pytest.raises(ParamError) as err:
        TECHNIQUES.get("lowrank_cp").resolve(params)
    assert err.value.param == field


@pytest.mark.parametrize(("step", "field", "says"), [
    ("lowrank_cp", "lowrank_cp.rank", "lowrank_cp needs rank"),
    ("{lowrank_cp: {rank: 0.5}}", "lowrank_cp.rank", "rank must be a positive integer, got 0.5"),
    ("{lowrank_cp: {energy: 0.9}}", "lowrank_cp.energy", "unknown field"),
])
def test_bad_cp_suite_is_refused_at_load(tmp_path: Path, step: str, field: str,
                                         says: str) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text("datasets: {digits: {type: digits}}\n"
                    "models: {m: {arch: digits_cnn, dataset: digits, recipes: [r]}}\n"
                    f"recipes: {{r: {{steps: [{step}]}}}}\n")
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert err.value.field == f"recipes.r.steps[0].{field}"
    assert says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_cp_suite_builds_exports_and_scores(tmp_path: Path) -> None:
    suite = tmp_path / "cp.yaml"
    suite.write_text(
        "name: cp\nseed: 0\nformats: [onnx, tflite]\n"
        "datasets: {digits: {type: digits}}\n"
        "models: {d: {arch: digits_cnn, dataset: digits, train: {epochs: 1, threads: 1},"
        " recipes: [cp]}}\n"
        "recipes: {cp: {steps: [{lowrank_cp: {rank: 8, finetune_epochs: 1}}]}}\n")
    report = build_suite(suite, tmp_path / "build", console=Console(quiet=True), workers=0)
    assert not report.failures
    arts = {(a.name, a.format): a for a in report.artifacts}
    base = arts[("d", "onnx")]
    for fmt in ("onnx", "tflite"):
        cp = arts[("d-cp", fmt)]
        assert cp.path.exists() and cp.technique == "cp_r8"
        assert cp.params < base.params and cp.macs < base.macs
        assert cp.host_accuracy is not None and cp.host_accuracy["n"] == 359
        assert cp.host_accuracy["top1"] > 0.5, cp.host_accuracy
        (step,) = cp.lineage
        assert step["technique"] == "lowrank_cp"
        assert step["result"]["ranks"] == {"features.4": 8, "features.8": 8}
        assert set(step["result"]["relative_error"]) == {"features.4", "features.8"}
