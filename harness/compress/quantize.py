"""Quantization: post-training dynamic and static int8, fp16, and quantization-aware training.

ONNX goes through onnxruntime.quantization (QDQ format, per-channel symmetric int8 weights, uint8
activations calibrated on `calibration_size` training images). ONNX weights are 7-bit by default
(`reduce_range`): on an x86 CPU without VNNI, ONNX Runtime's u8s8 kernels add pairs of uint8 x int8
products in a signed 16-bit register, which two 8-bit products (2 x 255 x 127) can overflow; the
saturated sums cost the demo CNN 4 to 11 points of top-1 on such a CPU and none on a VNNI one. With
weights in [-64, 64] a pair is at most 2 x 255 x 64 = 32640 < 32767, so one file computes the same
thing on every CPU; the kernels are the same, so it costs no speed. A recipe for VNNI or Arm
devices only can set `reduce_range: false`. TFLite goes through
ai-edge-quantizer on the litert-torch fp32 file: full int8 (int8 inputs and outputs, as the Edge
TPU requires), dynamic-range int8, or fp16 weights; its int8 kernels accumulate in 32 bits and
keep the full 8-bit range. QAT fine-tunes with fake quantization that
mirrors the converter's rounding (per-channel symmetric weights, asymmetric 8-bit activations),
then the trained float weights are converted by the same static quantizer; the accuracy recorded
is the converted artifact's, never the fake-quantized graph's. (The fake quantization sees conv
kernels before BatchNorm is folded into them at export, a common approximation; what counts is
the converted file's measured accuracy.)
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.compress.export import edgetpu_compile, finish_onnx
from harness.compress.techniques import (
    QUANTIZE,
    TORCH,
    flag,
    learning_rate,
    one_of,
    positive_int,
    technique,
)
from harness.compress.train import StepContext, fit

CALIBRATION = ("minmax", "entropy", "percentile")
# int8 here rewrites an exported ONNX or TFLite file; a torch.export program is not quantized.
FILE_FORMATS = ("onnx", "tflite")

# Largest int8 weight code with `reduce_range` (onnxruntime's reduced INT8 range is [-64, 64]).
REDUCED_WEIGHT_MAX = 64


def _check_static(p: dict[str, Any]) -> None:
    positive_int(p, "calibration_size")
    one_of(p, "method", CALIBRATION)
    for key in ("per_channel", "edgetpu", "reduce_range"):
        flag(p, key)


def _check_dynamic(p: dict[str, Any]) -> None:
    for key in ("per_channel", "reduce_range"):
        flag(p, key)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an array of inputs."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self._it = iter([{name: x[i:i + 1]} for i in range(len(x))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - part of the protocol, unused by minmax
        pass


def _onnx_static(src: Path, dst: Path, params: dict[str, Any], ctx: StepContext) -> dict:
    import onnx
    import onnxruntime.quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = ctx.calibration(int(params["calibration_size"]))
    prepped = dst.with_suffix(".prep.onnx")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        name = onnx.load(str(prepped), load_external_data=False).graph.input[0].name
        method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                  "percentile": q.CalibrationMethod.Percentile}[params["method"]]
        q.quantize_static(
            str(prepped), str(dst), _Reader(name, calib),  # type: ignore[arg-type]
            quant_format=q.QuantFormat.QDQ, per_channel=bool(params["per_channel"]),
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            calibrate_method=method, reduce_range=bool(params["reduce_range"]),
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    finally:
        prepped.unlink(missing_ok=True)
    finish_onnx(dst)
    return {"calibration_n": len(calib), "weight_bits": 7 if params["reduce_range"] else 8}


def _tflite_quantizer(src: Path) -> Any:
    from ai_edge_quantizer import quantizer

    return quantizer.Quantizer(str(src))


def _tflite_quantize(qt: Any, dst: Path, calibration: Any = None) -> None:
    # The quantizer prints a size summary on stdout, which edgebench keeps for its own output.
    with contextlib.redirect_stdout(io.StringIO()):
        result = qt.quantize(calibration) if calibration is not None else qt.quantize()
        dst.unlink(missing_ok=True)  # a rebuild replaces the old file without a warning
        result.export_model(str(dst))
    _buffers_inside(dst)


# TFLite's flatbuffers hold at most 2 GiB; a model past that must keep its buffers outside.
_FLATBUFFER_MAX = 2**31 - 1


def _buffers_inside(path: Path) -> None:
    """Move the constant buffers of the TFLite file at `path` into its flatbuffer, where the
    quantizer put them after it (offset and size: ai-edge-quantizer does so once a model's
    weights pass 256 KiB, the digits CNN's at fp16). tflite-runtime before 2.14 reads no such
    buffer: the file loaded there and failed its first inference (`Input tensor 9 lacks data`),
    where its weights inside run on every version. A file too large for a flatbuffer keeps them
    outside, and the agent says which runtimes cannot read it."""
    from ai_edge_litert.tools import flatbuffer_utils

    from harness.agent.runtimes.tflitefile import buffers_outside

    raw = path.read_bytes()
    if not buffers_outside(str(path)) or len(raw) > _FLATBUFFER_MAX:
        return
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(raw))
    for buffer in model.buffers:
        if buffer.offset is not None and buffer.offset > 1:  # 1: "empty", as the schema has it
            buffer.data = np.frombuffer(raw, np.uint8, buffer.size, buffer.offset)
            buffer.offset = buffer.size = 0
    path.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tflite_static(src: Path, dst: Path, params: dict[str, Any], ctx: StepContext) -> dict:
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import recipe

    calib = ctx.calibration(int(params["calibration_size"]))
    signatures = Interpreter(model_path=str(src)).get_signature_list()
    sig = next(iter(signatures))
    name = signatures[sig]["inputs"][0]
    qt = _tflite_quantizer(src)
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    # The quantizer draws its own tqdm bar on stderr; edgebench has its own progress.
    quiet_err = contextlib.redirect_stderr(io.StringIO())
    with contextlib.redirect_stdout(io.StringIO()), quiet_err, warnings.catch_warnings():
        # The quantizer's calibration keeps all tensors on purpose and says so with a warning.
        warnings.filterwarnings("ignore", "Warning: Enabling `experimental_preserve_all_tensors`",
                                UserWarning)
        calibration = qt.calibrate({sig: [{name: calib[i:i + 1]} for i in range(len(calib))]})
        _tflite_quantize(qt, dst, calibration)
    info: dict[str, Any] = {"calibration_n": len(calib)}
    if params.get("edgetpu"):
        compiled, report = edgetpu_compile(dst)
        ctx.console.print(f"[yellow]{ctx.entry}[/]: {report.strip().splitlines()[0]}"
                          if compiled is None else f"{ctx.entry}: {report.strip()}")
        info["edgetpu"] = {"compiled": compiled.name if compiled else None,
                           "report": report.strip()}
    return info


@technique(
    "quantize_static", QUANTIZE,
    defaults={"calibration_size": 128, "per_channel": True, "method": "minmax", "edgetpu": False,
              "reduce_range": True},
    label=lambda p: "int8_static",
    check=_check_static,
    precision="int8",
    formats=FILE_FORMATS,
    param_formats={"per_channel": ("onnx",), "method": ("onnx",), "reduce_range": ("onnx",),
                   "edgetpu": ("tflite",)},
)
def quantize_static(src: Path, dst: Path, fmt: str, params: dict[str, Any], ctx: StepContext
                    ) -> dict[str, Any]:
    """Post-training static int8: calibrated activations; TFLite gets int8 inputs and outputs."""
    return (_onnx_static if fmt == "onnx" else _tflite_static)(src, dst, params, ctx)


@technique(
    "quantize_dynamic", QUANTIZE,
    defaults={"per_channel": False, "reduce_range": True},
    label=lambda p: "int8_dynamic",
    check=_check_dynamic,
    precision="int8",
    formats=FILE_FORMATS,
    param_formats={"per_channel": ("onnx",), "reduce_range": ("onnx",)},
)
def quantize_dynamic(src: Path, dst: Path, fmt: str, params: dict[str, Any], ctx: StepContext
                     ) -> dict[str, Any]:
    """Post-training dynamic-range int8: int8 weights, activations quantized on the fly."""
    if fmt == "onnx":
        import onnxruntime.quantization as q

        # Its advice to pre-process is for static quantization; dynamic needs no shapes.
        logging.getLogger().disabled, was = True, logging.getLogger().disabled
        try:
            q.quantize_dynamic(str(src), str(dst), per_channel=bool(params["per_channel"]),
                               reduce_range=bool(params.get("reduce_range", True)),
                               weight_type=q.QuantType.QInt8)
        finally:
            logging.getLogger().disabled = was
        finish_onnx(dst)
        return {"weight_bits": 7 if params.get("reduce_range", True) else 8}
    from ai_edge_quantizer import recipe

    qt = _tflite_quantizer(src)
    qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    _tflite_quantize(qt, dst)
    return {}


@technique(
    "quantize_fp16", QUANTIZE,
    defaults={},
    label=lambda p: "fp16",
    precision="fp16",
    formats=("tflite",),
)
def quantize_fp16(src: Path, dst: Path, fmt: str, params: dict[str, Any], ctx: StepContext
                  ) -> dict[str, Any]:
    """TFLite float16 weights (dequantized to fp32 at load; halves the file)."""
    from ai_edge_quantizer import algorithm_manager, qtyping

    qt = _tflite_quantizer(src)
    qt.add_weight_only_config(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
        granularity=qtyping.QuantGranularity.TENSORWISE,
        algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
    )
    _tflite_quantize(qt, dst)
    return {}


# --- quantization-aware training -------------------------------------------------------------


class _ActivationObserver:
    """Forward pre-hook: tracks the input range of a layer (EMA of min/max) and fake-quantizes
    the input to asymmetric uint8 with it, as the converter's calibrated activations will be."""

    def __init__(self, momentum: float = 0.1) -> None:
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None
        self.momentum = momentum

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple:
        x = args[0]
        if module.training:
            low, high = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
            if self.low is None or self.high is None:
                self.low, self.high = low, high
            else:
                self.low = self.low + self.momentum * (low - self.low)
                self.high = self.high + self.momentum * (high - self.high)
        if self.low is None or self.high is None:
            return args
        scale = float(((self.high - self.low) / 255).clamp(min=1e-8))
        zero = int(torch.round(-self.low / scale).clamp(0, 255))
        return (torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255), *args[1:])


class _WeightFakeQuant(nn.Module):
    """Parametrization: per-output-channel symmetric int8 fake quantization of a weight, with the
    converter's code range (127, or REDUCED_WEIGHT_MAX with `reduce_range`)."""

    def __init__(self, qmax: int = 127) -> None:
        super().__init__()
        self.qmax = qmax

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, w.dim()))
        scale = (w.detach().abs().amax(dim=dims) / self.qmax).clamp(min=1e-8)
        zero = torch.zeros(w.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -self.qmax, self.qmax)


def _check_qat(p: dict[str, Any]) -> None:
    positive_int(p, "epochs")
    learning_rate(p)
    _check_static(p)


@technique(
    "qat", TORCH,
    defaults={"epochs": 3, "lr": 2e-4, "calibration_size": 128, "per_channel": True,
              "method": "minmax", "edgetpu": False, "reduce_range": True},
    label=lambda p: "qat_int8",
    check=_check_qat,
    precision="int8",
    then_quantize="quantize_static",
)
def qat(model: nn.Module, params: dict[str, Any], ctx: StepContext
        ) -> tuple[nn.Module, dict[str, Any]]:
    """Quantization-aware fine-tuning, then static int8 conversion of the trained weights."""
    from torch.nn.utils import parametrize

    model = model.cpu()
    qmax = REDUCED_WEIGHT_MAX if params["reduce_range"] else 127
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    hooks = []
    for layer in layers:
        parametrize.register_parametrization(layer, "weight", _WeightFakeQuant(qmax))
        hooks.append(layer.register_forward_pre_hook(_ActivationObserver()))
    try:
        fit(model, ctx, epochs=params["epochs"], lr=params["lr"], description="QAT fine-tune")
    finally:
        for hook in hooks:
            hook.remove()
        for layer in layers:
            # Keep the float weights: the converter re-applies exactly the rounding trained for.
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    return model.eval(), {"layers": len(layers)}
