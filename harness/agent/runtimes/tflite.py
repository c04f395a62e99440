"""LiteRT / TFLite: `ai_edge_litert` or `tflite_runtime`, whichever is installed.

The timed step is `invoke()` alone on the input already set, as benchmark_model times it;
`run_end_to_end` adds `set_tensor` and `get_tensor`. Threads and XNNPACK are explicit settings; an
int8/uint8 model gets its float input quantized with the input tensor's scale and zero point
(outside the timer) and its output dequantized, so every artifact of a model is fed the same
float32 tensors. Extra delegates (the Edge TPU's `libedgetpu.so.1`) are loaded by name from the
job's options.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ModelLoadError, Runtime, dequantize, first_line, quantize

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


class TFLiteRuntime(Runtime):
    name = "tflite"
    formats = ("tflite",)

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
        try:
            self.interpreter = _interp.Interpreter(**kwargs)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ModelLoadError(
                "model_invalid", f"LiteRT cannot load {model_path}: {first_line(err)}"
            ) from err
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self._options = {
            "package": _PACKAGE,
            "threads": int(threads) if threads else None,
            "xnnpack": xnnpack,
            "delegates": list(options.get("delegates") or []),
            "input_dtype": np.dtype(self._in["dtype"]).name,
        }

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

    def close(self) -> None:
        self.interpreter = None


RUNTIME = TFLiteRuntime
