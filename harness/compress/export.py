"""Exports of a PyTorch model to the formats devices run, and host runs of the exported files.

ONNX: torch's exporter at batch 1, one self-contained file (no external data), `onnx.checker`
clean; this is also the file TensorRT builds engines from on a Jetson. TFLite: litert-torch,
NCHW input kept. Edge TPU: the full-int8 TFLite through `edgetpu_compiler` when it is installed.
`run_exported` runs a file in its own runtime on the host (onnxruntime, the LiteRT Interpreter),
feeding the same float32 tensors the device gets and quantizing them for int8-input models the
way the device agent does, so that host accuracy is the deployed artifact's accuracy.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.errors import EdgebenchError


class ExportError(EdgebenchError):
    """A model that cannot be exported to a format (an unsupported op, a failed check)."""


_UNSUPPORTED_OP = (
    re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)>"),
    re.compile(r"Lowering not found: ([\w.]+)"),
)


def _first_line(err: BaseException) -> str:
    """The line of an exporter's long error that says what is wrong, preferably the op."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip() or type(err).__name__
    for pattern in _UNSUPPORTED_OP:
        if match := pattern.search(text):
            return f"unsupported op {'.'.join(match.groups())}"
    for line in text.splitlines():
        if "unsupported" in line.lower() or "not supported" in line.lower():
            return line.strip()
    return text.splitlines()[0].strip()


@contextlib.contextmanager
def _quiet() -> Any:
    """Exporters print progress and diagnostics on stdout; edgebench keeps stdout for its own."""
    sink = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "litert_torch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sink):
            yield sink
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path,
                opset: int = 18) -> Path:
    import onnx

    model = model.cpu().eval()
    example = torch.zeros(input_shape)
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                              input_names=["input"], output_names=["logits"],
                              opset_version=opset, optimize=True)
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:
        path.unlink(missing_ok=True)
        raise ExportError(f"ONNX export failed: {_first_line(err)}") from err
    return path


def export_tflite(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    import litert_torch
    from litert_torch import _config

    _config.config.show_progress = False
    model = model.cpu().eval()
    example = torch.zeros(input_shape)
    try:
        with _quiet():
            litert_torch.convert(model, (example,)).export(str(path))
    except Exception as err:
        path.unlink(missing_ok=True)
        raise ExportError(f"TFLite export failed: {_first_line(err)}") from err
    return path


def edgetpu_compile(tflite: Path) -> tuple[Path | None, str]:
    """Compile a full-int8 TFLite for the Edge TPU; (compiled path, compiler report) or
    (None, why not)."""
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        return None, ("edgetpu_compiler is not on the PATH: the int8 TFLite is Edge TPU-ready but "
                      "was not compiled (install it from https://coral.ai/docs/edgetpu/compiler/)")
    proc = subprocess.run([compiler, "-s", "-o", str(tflite.parent), str(tflite)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ExportError(f"edgetpu_compiler failed: {(proc.stderr or proc.stdout).strip()}")
    compiled = tflite.with_name(tflite.stem + "_edgetpu.tflite")
    return compiled, proc.stdout


# --- host runs of exported files ------------------------------------------------------------


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=min(4, os.cpu_count() or 1))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    quant_in = np.dtype(inp["dtype"]).kind in "iu"
    quant_out = np.dtype(out["dtype"]).kind in "iu"
    rows = []
    for i in range(len(x)):
        sample = x[i:i + 1]
        interp.set_tensor(inp["index"], _quantize(sample, inp) if quant_in else sample)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if quant_out:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        rows.append(y.astype(np.float32))
    return np.concatenate(rows)


def run_exported(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    runner = {"onnx": run_onnx, "tflite": run_tflite}.get(fmt)
    if runner is None:
        raise EdgebenchError(f"{path}: no host runtime for format {fmt!r}")
    try:
        return runner(path, x)
    except Exception as err:
        raise ExportError(f"{path.name} does not run in its runtime: {_first_line(err)}") from err


def check_export_parity(path: Path, exported: np.ndarray, torch_out: np.ndarray,
                        rel_tol: float = 1e-3) -> None:
    """An fp32 file must compute what the PyTorch model it came from computes (up to float
    reordering); anything else is an exporter or runtime bug, and the artifact is refused."""
    if exported.shape != torch_out.shape:
        raise ExportError(f"{path.name} outputs shape {exported.shape}, its PyTorch model "
                          f"{torch_out.shape}")
    scale = max(1.0, float(np.abs(torch_out).max()))
    diff = float(np.max(np.abs(exported - torch_out)))
    if diff > rel_tol * scale:
        raise ExportError(f"{path.name} disagrees with its PyTorch model: max abs diff {diff:.3g} "
                          f"(tolerance {rel_tol * scale:.3g})")


def input_dtype(path: Path, fmt: str) -> str:
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        return np.dtype(Interpreter(model_path=str(path)).get_input_details()[0]["dtype"]).name
    return "float32"


def scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Top-1 and top-5 accuracy of `logits` against `labels`."""
    order = np.argsort(-logits, axis=1)
    k = min(5, logits.shape[1])
    return {"top1": round(float(np.mean(order[:, 0] == labels)), 6),
            "top5": round(float(np.mean((order[:, :k] == labels[:, None]).any(axis=1))), 6),
            "n": int(len(labels))}


def parity(logits: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Agreement of `logits` with the fp32 parent's: top-1 agreement and max absolute diff."""
    return {"top1_agreement": round(float(np.mean(logits.argmax(1) == reference.argmax(1))), 6),
            "max_abs_diff": float(np.max(np.abs(logits - reference)))}
