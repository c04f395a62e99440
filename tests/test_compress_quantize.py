"""Quantization produces really quantized files that still run in their runtimes."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from rich.console import Console

from harness.compress.export import export_onnx, export_tflite, run_onnx, run_tflite
from harness.compress.quantize import (
    REDUCED_WEIGHT_MAX,
    _WeightFakeQuant,
    quantize_dynamic,
    quantize_fp16,
)
from harness.compress.quantize import quantize_static as static
from harness.compress.techniques import TECHNIQUES, ParamError, load_all
from harness.compress.train import StepContext
from harness.zoo import build_model, load_dataset

SHAPE = (1, 1, 32, 32)


@pytest.fixture(scope="module")
def digits_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("digits_cnn", 10, 1)


@pytest.fixture(scope="module")
def ctx() -> StepContext:
    data = load_dataset("digits", "digits", {}, seed=0)
    return StepContext("test", data, SHAPE, 10, 0, {}, Console(quiet=True))


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_onnx_static_int8_is_qdq_per_channel_and_4x_smaller(
        tmp_path: Path, digits_model: torch.nn.Module, ctx: StepContext) -> None:
    load_all()
    fp32 = export_onnx(digits_model, SHAPE, tmp_path / "fp32.onnx")
    out = tmp_path / "int8.onnx"
    params = TECHNIQUES.get("quantize_static").resolve({"calibration_size": 32})
    info = static(fp32, out, "onnx", params, ctx)
    assert info["calibration_n"] == 32
    ops = _ops(out)
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= ops["Conv"]
    model = onnx.load(str(out))
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert any(len(i.dims) == 4 for i in int8_weights)  # conv kernels stored as int8
    scales = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
              and any(a.name == "axis" for a in n.attribute)]
    assert scales, "per-channel weights carry an axis"
    assert out.stat().st_size < fp32.stat().st_size / 3.3
    x = ctx.data.x_test[:16]  # type: ignore[union-attr]
    ref, got = run_onnx(fp32, x), run_onnx(out, x)
    assert np.mean(ref.argmax(1) == got.argmax(1)) >= 0.8


def _int8_weight_codes(path: Path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    return [onnx.numpy_helper.to_array(i).astype(np.int32) for i in model.graph.initializer
            if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]


# An x86 CPU without VNNI adds two uint8 x int8 products in a signed 16-bit lane (VPMADDUBSW).
INT16_MAX = 32767


@pytest.mark.parametrize("technique", ["quantize_static", "quantize_dynamic"])
def test_onnx_int8_weights_cannot_saturate_16_bit_pair_sums(
        tmp_path: Path, digits_model: torch.nn.Module, ctx: StepContext, technique: str) -> None:
    """The property that makes an int8 file compute the same on every CPU, checked on the file
    itself: whatever this host's instruction set, no pair of products can overflow int16."""
    load_all()
    fp32 = export_onnx(digits_model, SHAPE, tmp_path / "fp32.onnx")
    tech = TECHNIQUES.get(technique)
    worst = {}
    for reduce_range in (True, False):
        out = tmp_path / f"{technique}-{reduce_range}.onnx"
        params = tech.resolve({"reduce_range": reduce_range} if technique == "quantize_dynamic"
                              else {"reduce_range": reduce_range, "calibration_size": 32})
        tech.apply(fp32, out, "onnx", params, ctx)
        codes = _int8_weight_codes(out)
        assert codes, f"{out.name} has no int8 weights"
        worst[reduce_range] = max(int(np.abs(c).max()) for c in codes)
    assert 2 * 255 * worst[True] <= INT16_MAX  # the default: safe on AVX2 without VNNI
    assert 2 * 255 * worst[False] > INT16_MAX  # 8-bit weights could saturate there


def test_onnx_dynamic_int8_uses_integer_ops(tmp_path: Path, digits_model: torch.nn.Module,
                                            ctx: StepContext) -> None:
    fp32 = export_onnx(digits_model, SHAPE, tmp_path / "fp32.onnx")
    out = tmp_path / "dyn.onnx"
    quantize_dynamic(fp32, out, "onnx", {"per_channel": False}, ctx)
    ops = _ops(out)
    assert ops["DynamicQuantizeLinear"] >= 1
    assert ops["MatMulInteger"] + ops["ConvInteger"] >= 1
    assert out.stat().st_size < fp32.stat().st_size / 3.3
    assert run_onnx(out, ctx.data.x_test[:4]).shape == (4, 10)  # type: ignore[union-attr]


def test_tflite_full_int8_has_int8_io_and_fp16_halves(
        tmp_path: Path, digits_model: torch.nn.Module, ctx: StepContext) -> None:
    from ai_edge_litert.interpreter import Interpreter

    load_all()
    fp32 = export_tflite(digits_model, SHAPE, tmp_path / "fp32.tflite")
    int8 = tmp_path / "int8.tflite"
    params = TECHNIQUES.get("quantize_static").resolve({"calibration_size": 16, "edgetpu": True})
    info = static(fp32, int8, "tflite", params, ctx)
    interp = Interpreter(model_path=str(int8))
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    assert interp.get_input_details()[0]["quantization"][0] > 0
    assert int8.stat().st_size < fp32.stat().st_size / 3.3
    # Without the compiler the step says so instead of failing.
    assert info["edgetpu"]["compiled"] is None and "edgetpu_compiler" in info["edgetpu"]["report"]
    x = ctx.data.x_test[:16]  # type: ignore[union-attr]
    assert np.mean(run_tflite(int8, x).argmax(1) == run_tflite(fp32, x).argmax(1)) >= 0.8

    fp16 = tmp_path / "fp16.tflite"
    quantize_fp16(fp32, fp16, "tflite", {}, ctx)
    assert 0.4 < fp16.stat().st_size / fp32.stat().st_size < 0.6
    assert Interpreter(model_path=str(fp16)).get_input_details()[0]["dtype"] == np.float32
    np.testing.assert_allclose(run_tflite(fp16, x), run_tflite(fp32, x), atol=0.05)
    # its 300 KiB of weights inside the flatbuffer, where tflite-runtime before 2.14 reads them
    # (the quantizer puts them after it past 256 KiB); the int8 file's too
    from harness.agent.runtimes.tflitefile import buffers_outside

    assert buffers_outside(str(fp16)) == buffers_outside(str(int8)) == 0


def test_qat_fake_quant_mirrors_int8_rounding() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    q = _WeightFakeQuant()(w)
    for channel in q.detach():
        scale = float(channel.abs().max()) / 127
        codes = channel / scale
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        assert len(torch.unique(codes.round())) <= 255
    q.sum().backward()  # straight-through: gradients reach the float weights
    assert w.grad is not None and torch.all(w.grad == 1)
    # with reduce_range (the ONNX default) QAT trains for the 7-bit codes the converter writes
    reduced = _WeightFakeQuant(REDUCED_WEIGHT_MAX)(w.detach())
    for channel in reduced:
        codes = channel / (float(channel.abs().max()) / REDUCED_WEIGHT_MAX)
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        assert int(codes.round().abs().max()) == REDUCED_WEIGHT_MAX


def test_quantize_parameters_are_checked() -> None:
    load_all()
    with pytest.raises(ParamError, match="calibration_size"):
        TECHNIQUES.get("quantize_static").resolve({"calibration_size": 0})
    with pytest.raises(ParamError, match="method"):
        TECHNIQUES.get("quantize_static").resolve({"method": "guess"})
    with pytest.raises(ParamError, match="epochs"):
        TECHNIQUES.get("qat").resolve({"epochs": 0})


def test_qat_trains_then_leaves_a_plain_float_model(ctx: StepContext) -> None:
    from torch.nn.utils import parametrize

    from harness.compress.quantize import qat

    load_all()
    torch.manual_seed(0)
    model = build_model("digits_cnn_small", 10, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = TECHNIQUES.get("qat").resolve({"epochs": 1, "lr": 1e-3})
    out, info = qat(model, params, replace(ctx, train={"threads": 1}))
    assert info["layers"] == 5
    assert not any(parametrize.is_parametrized(m) for m in out.modules())
    assert not any(m._forward_pre_hooks for m in out.modules())  # observers removed
    assert set(out.state_dict()) == set(before)  # same float layout the exporter expects
    assert any(not torch.equal(out.state_dict()[k], before[k]) for k in before)
    assert TECHNIQUES.get("qat").then_quantize == "quantize_static"


@pytest.mark.parametrize("step", ["quantize_static", "quantize_dynamic"])
def test_onnx_int8_files_import_only_their_opsets_at_the_lowest_ir_version(
        tmp_path: Path, digits_model: torch.nn.Module, ctx: StepContext, step: str) -> None:
    """Found by an audit: quantize_static's files imported ai.onnx.ml 5 and other opsets no
    node uses, at IR 10, and the onnxruntime 1.12 to 1.16 of JetPack 5 loaded none of them."""
    load_all()
    fp32 = export_onnx(digits_model, SHAPE, tmp_path / "fp32.onnx", opset=17)
    out = tmp_path / "int8.onnx"
    tech = TECHNIQUES.get(step)
    tech.apply(fp32, out, "onnx", tech.resolve({"calibration_size": 8} if step ==
                                               "quantize_static" else {}), ctx)
    model = onnx.load(str(out))
    used = {n.domain for n in model.graph.node}
    assert {o.domain for o in model.opset_import} <= used | {""}
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    assert model.ir_version == onnx.helper.find_min_ir_version_for(list(model.opset_import)) == 8
    onnx.checker.check_model(model, full_check=True)
