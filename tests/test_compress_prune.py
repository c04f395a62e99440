"""Pruning really removes channels (structured) or zeroes weights (unstructured)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from rich.console import Console
from torch import nn

from harness.compress.export import export_onnx, run_onnx
from harness.compress.prune import prune_magnitude, prune_structured, sparsity
from harness.compress.techniques import TECHNIQUES, ParamError, load_all
from harness.compress.train import StepContext, count_macs, count_params
from harness.zoo import build_model


def _ctx(shape: tuple[int, ...], classes: int) -> StepContext:
    return StepContext("test", None, shape, classes, 0, {}, Console(quiet=True))


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_structured_pruning_shrinks_the_exported_graph(tmp_path: Path) -> None:
    load_all()
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, 1)
    before_params, before_macs = count_params(model), count_macs(model, (1, 1, 32, 32))
    widths = [c.out_channels for c in _convs(model)]
    params = TECHNIQUES.get("prune_structured").resolve({"ratio": 0.5, "finetune_epochs": 0})
    pruned, info = prune_structured(model, params, _ctx((1, 1, 32, 32), 10))
    assert [c.out_channels for c in _convs(pruned)] == [w // 2 for w in widths]
    assert info["params_after"] == count_params(pruned) < 0.35 * before_params
    assert count_macs(pruned, (1, 1, 32, 32)) < 0.35 * before_macs
    assert pruned(torch.zeros(1, 1, 32, 32)).shape == (1, 10)

    path = export_onnx(pruned, (1, 1, 32, 32), tmp_path / "p.onnx")
    graph = onnx.load(str(path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    conv_out = sorted(weights[n.input[1]].shape[0] for n in graph.node if n.op_type == "Conv")
    assert conv_out == sorted(w // 2 for w in widths)
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(path, x), pruned(torch.from_numpy(x)).numpy(),
                                   atol=1e-4)


def test_structured_pruning_handles_residual_groups() -> None:
    load_all()
    model = build_model("resnet18", 1000)
    before = count_macs(model, (1, 3, 64, 64))
    params = TECHNIQUES.get("prune_structured").resolve({"ratio": 0.5, "finetune_epochs": 0})
    pruned, _ = prune_structured(model, params, _ctx((1, 3, 64, 64), 1000))
    assert pruned(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    assert pruned.fc.out_features == 1000  # the classifier keeps its classes
    assert count_macs(pruned, (1, 3, 64, 64)) < 0.35 * before


def test_magnitude_pruning_reaches_the_sparsity_asked() -> None:
    load_all()
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, 1)
    params = TECHNIQUES.get("prune_magnitude").resolve({"sparsity": 0.6, "finetune_epochs": 0})
    pruned, info = prune_magnitude(model, params, _ctx((1, 1, 32, 32), 10))
    assert info["sparsity_reached"] == pytest.approx(0.6, abs=0.01)
    assert sparsity(pruned) == pytest.approx(0.6, abs=0.01)
    assert not any(hasattr(m, "weight_mask") for m in pruned.modules())  # masks made permanent


@pytest.mark.parametrize(("technique", "params", "needle"), [
    ("prune_structured", {"ratio": 1.5}, "ratio=1.5 is out of range"),
    ("prune_structured", {"ratio": 0.3, "importance": "vibes"}, "importance"),
    ("prune_magnitude", {"sparsity": -0.1}, "sparsity"),
    ("prune_structured", {"finetune_epochs": -1}, "finetune_epochs"),
])
def test_out_of_range_parameters(technique: str, params: dict, needle: str) -> None:
    load_all()
    with pytest.raises(ParamError, match=needle):
        TECHNIQUES.get(technique).resolve(params)


def test_fine_tuning_without_data_is_refused() -> None:
    load_all()
    params = TECHNIQUES.get("prune_structured").resolve({"ratio": 0.3, "finetune_epochs": 1})
    with pytest.raises(ParamError, match="needs a dataset"):
        prune_structured(build_model("digits_cnn", 10, 1), params, _ctx((1, 1, 32, 32), 10))


def test_unprunable_graph_is_a_clear_error() -> None:
    from harness.errors import EdgebenchError

    load_all()
    params = TECHNIQUES.get("prune_structured").resolve({"ratio": 0.5, "finetune_epochs": 0})
    with pytest.raises(EdgebenchError, match="channel shuffles"):
        prune_structured(build_model("shufflenet_v2_x0_5", 10), params, _ctx((1, 3, 64, 64), 10))
