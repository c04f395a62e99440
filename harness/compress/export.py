"""Exports of a PyTorch model to the formats devices run, and host runs of the exported files.

ONNX: torch's exporter at batch 1, one self-contained file (no external data), `onnx.checker` clean,
at the suite's opset and the lowest IR version it needs, importing only the opsets its nodes use
(`finish_onnx`, which the quantizers' files go through too: old onnxruntimes refuse the rest);
this is also the file TensorRT builds engines from on a Jetson. TFLite: litert-torch, NCHW input
kept. PyTorch: a `torch.export` program saved as `.pt2` (batch 1, static shapes), which the agent's
torch runtime loads on the CPU or a CUDA GPU. Edge TPU: the full-int8 TFLite through
`edgetpu_compiler` when it is installed. `run_exported` runs a file on the host through the device
agent's own runtime classes and row loop (`harness.agent.runtimes`,
`harness.agent.scoring.logits_of`), fed the same float32 tensors the device gets, so host accuracy
is the deployed artifact's accuracy and is scored by the agent's `scoring.score`: host and device
differ only in the machine.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.agent import scoring
from harness.agent.runtimes import ModelLoadError, Runtime, RuntimeUnavailable, get_runtime
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


# What TensorFlow's and LiteRT's native code and torch's pytree log when litert-torch is first
# imported and the first interpreter is made: start-up chatter, not about the user's models.
_NATIVE_CHATTER = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|_pytree\.py:\d+\] <enum '\w+'> is an Enum subclass"
    r"|Created TensorFlow Lite XNNPACK delegate for CPU")


@contextlib.contextmanager
def _without_native_chatter() -> Any:
    """Run a block with file descriptor 2 caught, then write what it printed back to stderr
    less the start-up chatter above (native code writes there past Python's sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode(errors="replace").splitlines()
                    if line.strip() and not _NATIVE_CHATTER.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)


# The opset torch's exporter writes natively (torchlib's); a lower one (`onnx: {opset: 17}` in a
# suite, for the onnxruntime 1.12 and 1.13 of JetPack 5) is reached by onnx's version converter on
# the exported, optimized file. torch's own fallback converts before optimizing, where the axes of
# a ReduceMean (torchvision classifiers' global pooling) are not constants yet, fails, and leaves
# the file at 18 with a log line only. 14 is the lowest the converter reaches for the demo models
# (HardSwish has no earlier version, nor Relu 14 an adapter to 13).
EXPORTER_OPSET = 18
DEFAULT_ONNX_OPSET = 18
ONNX_OPSETS = range(14, EXPORTER_OPSET + 1)


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path,
                opset: int = DEFAULT_ONNX_OPSET) -> Path:
    model = model.cpu().eval()
    example = torch.zeros(input_shape)
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                              input_names=["input"], output_names=["logits"],
                              opset_version=max(opset, EXPORTER_OPSET), optimize=True)
        finish_onnx(path, opset)
    except Exception as err:
        path.unlink(missing_ok=True)
        raise ExportError(f"ONNX export failed: {_first_line(err)}") from err
    return path


def finish_onnx(path: Path, opset: int | None = None) -> None:
    """Make the ONNX file at `path` what every ONNX artifact is, in place: at `opset` (None:
    the one it has), importing only the opsets its nodes use, at the lowest IR version those
    opsets need, without the exporter's stack traces, and `onnx.checker` clean (full check).

    Every step that writes an ONNX file ends with this (the export, each quantizer). The onnx
    library stamps its own IR version (10 for onnx 1.16 and later) whatever the opsets, and
    onnxruntime.quantization lists opsets no node uses (ai.onnx.ml 5, com.microsoft, ...); an
    onnxruntime refuses a file over its IR version or with an import above what it knows, used
    or not, so the 1.12 to 1.16 of JetPack 5 loaded none of edgebench's files."""
    import onnx

    model = onnx.load(str(path))
    if opset is not None and onnx_versions(model)["opset"] != opset:
        model = _convert_opset(model, opset)
    _drop_onnx_stack_traces(model)
    _drop_unused_opsets(model)
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import),
                                                           ignore_unknown=True)
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"{path.name} fails onnx.checker: {_first_line(err)}") from err


def onnx_versions(model: Any) -> dict[str, int]:
    """The ai.onnx opset and the IR version of an ONNX file (a path) or ModelProto: what an
    onnxruntime checks before it loads one (each manifest records them)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    default = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return {"opset": default[0] if default else 0, "ir_version": model.ir_version}


# The Reduce ops whose axes became an input in opset 18, with noop_with_empty_axes (ReduceSum
# had both from 13 on: the converter leaves it as it is above 12).
_AXES_INPUT_AT_18 = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                     "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare")


def _convert_opset(model: Any, opset: int) -> Any:
    """`model` at the lower ai.onnx `opset`, by onnx's version converter. It moves a Reduce op's
    axes back to an attribute but keeps opset 18's `noop_with_empty_axes`, which no earlier
    version has (the checker refuses it); at its default 0 with axes given, dropping it changes
    nothing."""
    import onnx

    try:
        converted = onnx.version_converter.convert_version(model, opset)
    except RuntimeError as err:  # the converter's C++ assertion, naming the op it cannot adapt
        raise ExportError(f"onnx's version converter cannot take torch's opset {EXPORTER_OPSET} "
                          f"export down to opset {opset}: {_first_line(err)}") from err
    got = onnx_versions(converted)["opset"]
    if got != opset:
        raise ExportError(f"onnx's version converter gave opset {got}, not {opset}")
    if opset < EXPORTER_OPSET:
        for node in _all_nodes(converted):
            if node.domain in ("", "ai.onnx") and node.op_type in _AXES_INPUT_AT_18:
                kept = [a for a in node.attribute if a.name != "noop_with_empty_axes"]
                noop = [a.i for a in node.attribute if a.name == "noop_with_empty_axes"]
                if noop and noop[0] != 0:
                    raise ExportError(f"{node.op_type} {node.name} has noop_with_empty_axes=1, "
                                      f"which opset {opset} cannot express")
                del node.attribute[:]
                node.attribute.extend(kept)
    return converted


def _all_nodes(model: Any) -> list[Any]:
    """Every node of `model`: its graph's, its subgraphs' (If, Loop, Scan bodies, at any depth)
    and its local functions'."""
    import onnx

    nodes: list[Any] = []

    def walk(graph_nodes: Any) -> None:
        for node in graph_nodes:
            nodes.append(node)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g.node)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for graph in attr.graphs:
                        walk(graph.node)

    walk(model.graph.node)
    for function in model.functions:
        walk(function.node)
    return nodes


def _drop_unused_opsets(model: Any) -> None:
    """Keep the opset imports of the model, and of each of its local functions, that a node
    uses (a function's own domain counts: its callers name it); ai.onnx always stays."""
    used = {node.domain or "" for node in _all_nodes(model)}
    used |= {function.domain for function in model.functions}

    def keep(imports: Any) -> None:
        kept = [o for o in imports if (o.domain or "") in used | {"", "ai.onnx"}]
        if len(kept) != len(imports):
            del imports[:]
            imports.extend(kept)

    keep(model.opset_import)
    for function in model.functions:
        keep(function.opset_import)


# Where each node was traced from: the source lines, with the absolute paths of this checkout
# and its virtual environment. They made a file's bytes, and so its sha256 (the artifact's
# identity in the store, the device cache and run-to-run history), depend on where the project
# was cloned, and showed the builder's home folder to whoever got the file.
_STACK_TRACE = "pkg.torch.onnx.stack_trace"


def _drop_onnx_stack_traces(model: Any) -> None:
    graph = model.graph
    for item in [*graph.node, *graph.value_info, *graph.input, *graph.output,
                 *graph.initializer]:
        kept = [p for p in item.metadata_props if p.key != _STACK_TRACE]
        if len(kept) != len(item.metadata_props):
            del item.metadata_props[:]
            item.metadata_props.extend(kept)


def export_tflite(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    with _without_native_chatter():
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


def export_torch(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    model = model.cpu().eval()
    example = torch.zeros(input_shape)
    try:
        with _quiet(), torch.no_grad():
            program = torch.export.export(model, (example,))
            for module in program.graph_module.modules():  # see _drop_onnx_stack_traces
                if isinstance(module, torch.fx.GraphModule):
                    for node in module.graph.nodes:
                        node.meta.pop("stack_trace", None)
            torch.export.save(program, str(path))
    except Exception as err:
        path.unlink(missing_ok=True)
        raise ExportError(f"torch.export failed: {_first_line(err)}") from err
    return path


# Each takes (model, input_shape, path); export_onnx also `opset`, which the build passes.
EXPORTERS: dict[str, Callable[..., Path]] = {"onnx": export_onnx, "tflite": export_tflite,
                                             "torch": export_torch}


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


# The agent's runtime for each format: the host runs a file exactly as a device does.
HOST_RUNTIME = {"onnx": "onnxruntime", "tflite": "tflite", "torch": "torch"}
# Runtime options of host runs; a device job with the same options computes the same logits.
HOST_OPTIONS: dict[str, Any] = {"threads": min(4, os.cpu_count() or 1)}


def _load(path: Path, fmt: str) -> Runtime:
    name = HOST_RUNTIME.get(fmt)
    if name is None:
        raise EdgebenchError(f"{path}: no host runtime for format {fmt!r}")
    try:
        runtime = get_runtime(name)
    except RuntimeUnavailable as err:
        raise EdgebenchError(f"{path.name}: cannot run {fmt} on this host: {err}") from err
    try:
        with _without_native_chatter() if fmt == "tflite" else contextlib.nullcontext():
            runtime.load(str(path), dict(HOST_OPTIONS))
    except ModelLoadError as err:
        raise ExportError(f"{path.name} does not run in its runtime: {err}") from err
    return runtime


def run_exported(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """Logits of `path` on the rows of `x`, through the agent's runtime for `fmt` and the
    agent's own loop (int8-input models get `x` quantized exactly as on the device)."""
    runtime = _load(path, fmt)
    try:
        return scoring.logits_of(runtime, x)
    except Exception as err:  # engines raise their own types; the artifact is what failed
        raise ExportError(f"{path.name} does not run in its runtime: {_first_line(err)}"
                          ) from err
    finally:
        runtime.close()


# Shorthands for callers that know the format (the quantize and prune tests).
def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    return run_exported(path, "onnx", x)


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    return run_exported(path, "tflite", x)


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
    """The input dtype the agent's runtime reports for the file (int8 for full-int8 TFLite)."""
    runtime = _load(path, fmt)
    try:
        return runtime.input_dtype().name
    finally:
        runtime.close()
