"""LiteRT / TFLite: `ai_edge_litert` or `tflite_runtime`, whichever is installed.

The timed step is `invoke()` alone on the input already set, as benchmark_model times it;
`run_end_to_end` adds `set_tensor` and `get_tensor`. Threads and XNNPACK are explicit settings; an
int8/uint8 model gets its float input quantized with the input tensor's scale and zero point
(outside the timer) and its output dequantized, so every artifact of a model is fed the same
float32 tensors. Extra delegates (the Edge TPU's `libedgetpu.so.1`) are loaded by name from the
job's options.

`placement` counts the operators a delegate took over (XNNPACK on the CPU, the Edge TPU, a GPU
delegate): the interpreter lists each delegate partition as a `DELEGATE` node beside the original
operators, and an operator belongs to a partition when it lies between the partition's inputs and
its outputs. The Python interpreter offers no per-operator timing (benchmark_model's
`--enable_op_profiling` does), so its `profile` is the operator list with placement, untimed.
XNNPACK is asked for, not promised: the interpreter makes no partition where its XNNPACK takes no
operator (tflite-runtime 2.7 for any model, 2.13 and 2.14 for an int8 one), so `xnnpack` among
the options in force and `in_force` in `placement` say whether one ran, `xnnpack_requested` what
was asked.

An old tflite-runtime (PyPI's wheels stop at 2.14) runs some newer files wrong or not at all, and
says so late or never; `load` refuses those as `unsupported`, naming the runtime's version and
why, before anything is measured (`refuse_file`, `refuse_loaded`).
"""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np

from . import (
    ModelLoadError,
    Runtime,
    declared_numpy,
    dequantize,
    first_line,
    numpy_older_than_declared,
    quantize,
    release,
)
from .tflitefile import buffers_outside

DELEGATE_OP = "DELEGATE"

try:
    from ai_edge_litert import interpreter as _interp

    _PACKAGE = "ai_edge_litert"
except ImportError:
    from tflite_runtime import interpreter as _interp  # raises ImportError -> unsupported

    _PACKAGE = "tflite_runtime"


def _package_version() -> str:
    try:
        from importlib import metadata

        return metadata.version(_PACKAGE.replace("_", "-"))
    except Exception:
        return "unknown"


# TFLite's own version where the package is tflite_runtime, which is numbered as TensorFlow;
# None for ai_edge_litert, numbered anew from 1.0 and newer than every tflite_runtime.
TFLITE_VERSION = (release(_package_version()) or None) if _PACKAGE == "tflite_runtime" else None
# The op the old runtime has no kernel of, in the words of its error.
MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")


def older_than(version: tuple[int, ...]) -> bool:
    """Whether this is a tflite_runtime older than TFLite `version`."""
    return TFLITE_VERSION is not None and TFLITE_VERSION < version


def fc_weights_per_channel(interpreter: Any) -> int:
    """How many FULLY_CONNECTED operators have weights quantized per channel (more than one
    scale): TFLite before 2.10 reads the first scale alone for them and computes wrong outputs
    without an error (all logits alike, top-1 at chance)."""
    tensors = {int(t["index"]): t for t in interpreter.get_tensor_details()}
    count = 0
    for op in interpreter._get_ops_details():
        if op["op_name"] != "FULLY_CONNECTED" or len(op["inputs"]) < 2:
            continue
        weights = tensors.get(int(op["inputs"][1])) or {}
        scales = (weights.get("quantization_parameters") or {}).get("scales")
        if scales is not None and len(scales) > 1:
            count += 1
    return count


class TFLiteRuntime(Runtime):
    name = "tflite"
    formats = ("tflite",)
    distributions = (_PACKAGE.replace("_", "-"),)

    def __init__(self) -> None:
        self.interpreter: Any = None
        self._x: Any = None
        self._e2e_out: Any = None  # kept so the end-to-end copy out is not optimised away
        self._options: dict[str, Any] = {}

    def version(self) -> str:
        return f"{_PACKAGE} {_package_version()}"

    def load(self, model_path: str, options: dict[str, Any]) -> None:
        kwargs: dict[str, Any] = {"model_path": model_path}
        threads = options.get("threads")
        if threads:
            kwargs["num_threads"] = int(threads)
        xnnpack = bool(options.get("xnnpack", True))
        if not xnnpack:
            kwargs["experimental_op_resolver_type"] = (
                _interp.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        delegates = []
        for lib in options.get("delegates") or []:
            try:
                delegates.append(_interp.load_delegate(lib))
            except (ValueError, OSError) as err:
                raise ModelLoadError("delegate_unavailable",
                                     f"cannot load delegate {lib}: {err}") from err
        if delegates:
            kwargs["experimental_delegates"] = delegates
        self.refuse_file(model_path)
        try:
            self.interpreter = _interp.Interpreter(**kwargs)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            missing = MISSING_OP.search(str(err))
            if missing:  # a sound file from a newer converter
                op, version = missing.groups()
                raise ModelLoadError(
                    "op_unsupported", f"{self.version()} here has no {op} version {version}, "
                    f"which {model_path} uses: it is older than the converter that wrote the "
                    "file", unsupported=True) from err
            raise ModelLoadError(
                "model_invalid", f"LiteRT cannot load {model_path}: {first_line(err)}"
            ) from err
        except SystemError as err:
            # its C++ module raised with no exception set: so it does when it was built against
            # a newer numpy than this, which it says on stderr alone
            if numpy_older_than_declared(self.distributions[0]) is None:
                raise
            need = declared_numpy(self.distributions[0])
            raise ModelLoadError(
                "runtime_unusable", f"{self.version()} cannot run with numpy {np.__version__} "
                f"here, older than the numpy >={need} it declares: install numpy>={need} for "
                "it", unsupported=True) from err
        self.refuse_loaded(model_path)
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        partitions = sum(1 for op in self.interpreter._get_ops_details()
                         if op["op_name"] == DELEGATE_OP)
        self._options = {
            "package": _PACKAGE,
            "threads": int(threads) if threads else None,
            # the partitions of other delegates cannot be told from XNNPACK's: None, not known
            "xnnpack": (xnnpack and partitions > 0) if not delegates else None,
            "xnnpack_requested": xnnpack,
            "delegates": list(options.get("delegates") or []),
            "input_dtype": np.dtype(self._in["dtype"]).name,
        }

    def refuse_file(self, model_path: str) -> None:
        """Refuse, before the interpreter reads it, a file this runtime would load and then
        fail to run."""
        if not older_than((2, 14)):
            return
        try:
            outside = buffers_outside(model_path)
        except (OSError, ValueError, struct.error):  # not a flatbuffer: the interpreter says so
            return
        if outside:
            raise ModelLoadError(
                "model_too_new", f"{self.version()} here cannot read {model_path}: {outside} of "
                "its constant buffers are stored after the flatbuffer (buffer offsets), which "
                "TFLite reads from 2.14 on", unsupported=True)

    def refuse_loaded(self, model_path: str) -> None:
        """Refuse a loaded model this runtime would run wrong without an error."""
        if older_than((2, 10)):
            per_channel = fc_weights_per_channel(self.interpreter)
            if per_channel:
                raise ModelLoadError(
                    "op_unsupported", f"{self.version()} here would compute {model_path} wrong: "
                    f"{per_channel} of its FULLY_CONNECTED weights are quantized per channel, and "
                    "TFLite before 2.10 applies one scale to them", unsupported=True)

    def input_shape(self) -> list[int | None]:
        sig = self._in.get("shape_signature")
        shape = sig if sig is not None and len(sig) else self._in["shape"]
        return [int(d) if d >= 0 else None for d in shape]

    def input_dtype(self) -> np.dtype:
        return np.dtype(self._in["dtype"])

    def set_input(self, x: np.ndarray) -> None:
        dtype = self.input_dtype()
        if dtype.kind in "iu":
            scale, zero_point = self._in["quantization"]
            x = quantize(x, scale, zero_point, dtype)
        self._x = np.ascontiguousarray(x, dtype=dtype)
        self.interpreter.set_tensor(self._in["index"], self._x)

    def run(self) -> None:
        self.interpreter.invoke()

    def run_end_to_end(self) -> None:
        self.interpreter.set_tensor(self._in["index"], self._x)
        self.interpreter.invoke()
        self._e2e_out = self.interpreter.get_tensor(self._out["index"])

    def output(self) -> np.ndarray:
        out = self.interpreter.get_tensor(self._out["index"])
        if np.dtype(self._out["dtype"]).kind in "iu":
            scale, zero_point = self._out["quantization"]
            return dequantize(out, scale, zero_point)
        return np.asarray(out, dtype=np.float32)

    def options_used(self) -> dict[str, Any]:
        return dict(self._options)

    def placement(self) -> dict[str, Any] | None:
        ops = self.interpreter._get_ops_details()
        delegated = delegated_ops(ops)
        total = [op for op in ops if op["op_name"] != DELEGATE_OP]
        asked = list(self._options.get("delegates") or [])
        left = sorted({op["op_name"] for op in total if op["index"] not in delegated})
        # An accelerator delegate (Edge TPU, GPU) leaving operators to the CPU is a fallback;
        # XNNPACK is itself the CPU.
        reasons = ["ran on the CPU: " + ", ".join(left)] if asked and left else []
        # the delegates that took operators (the asked-for ones together: their partitions
        # cannot be told apart), and XNNPACK where it made a partition
        in_force = asked if asked and delegated else []
        if self._options.get("xnnpack"):
            in_force = in_force + ["XNNPACK"]
        return {"requested": asked + (["XNNPACK"] if self._options.get("xnnpack_requested")
                                      else []),
                "in_force": in_force, "ops_total": len(total), "ops_delegated": len(delegated),
                "partitions": sum(1 for op in ops if op["op_name"] == DELEGATE_OP),
                "cpu_fallback": bool(reasons), "fallback_reasons": reasons}

    def profile(self, step: Any, iterations: int) -> dict[str, Any]:
        for _ in range(iterations):
            step()
        ops = self.interpreter._get_ops_details()
        delegated = delegated_ops(ops)
        where = "delegate" if not self._options.get("delegates") else "+".join(
            self._options["delegates"])
        if not self._options.get("delegates") and self._options.get("xnnpack"):
            where = "XNNPACK"
        rows = [{"name": "{}_{}".format(op["op_name"], op["index"]), "op_type": op["op_name"],
                 "provider": where if op["index"] in delegated else "CPU", "calls": 1,
                 "time_ms": None}
                for op in ops if op["op_name"] != DELEGATE_OP]
        return {"tool": "litert_ops", "iterations": iterations, "timed": False,
                "note": "the LiteRT Python interpreter offers no per-operator timing",
                "ops": rows, "placement": self.placement(), "raw": rows}

    def close(self) -> None:
        self.interpreter = None


def delegated_ops(ops: list[dict[str, Any]]) -> set[int]:
    """Indices of the operators inside a delegate partition: walking back from each partition's
    outputs through the operators that produce them, stopping at the partition's inputs."""
    producers = {}
    for op in ops:
        if op["op_name"] != DELEGATE_OP:
            for t in op["outputs"]:
                producers[int(t)] = op
    inside: set[int] = set()
    for part in ops:
        if part["op_name"] != DELEGATE_OP:
            continue
        boundary = {int(t) for t in part["inputs"]}
        todo = [int(t) for t in part["outputs"]]
        seen: set[int] = set()
        while todo:
            tensor = todo.pop()
            if tensor in seen or tensor in boundary or tensor not in producers:
                continue
            seen.add(tensor)
            op = producers[tensor]
            inside.add(int(op["index"]))
            todo.extend(int(t) for t in op["inputs"])
    return inside


RUNTIME = TFLiteRuntime
