"""Runtimes register by name; the job's `runtime` field picks one.

A runtime wraps one inference engine behind the few operations the protocol needs: load a model,
say what input it wants, put an input into runtime memory, execute and fetch outputs. Modules are
imported lazily so a device without, say, TensorRT can still run the others; a runtime whose engine
is not installed reports `unsupported` with the reason.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

# name -> module (relative to this package) that defines `RUNTIME`
RUNTIME_MODULES = {
    "onnxruntime": ".onnxruntime",
    "tflite": ".tflite",
}


class RuntimeUnavailable(Exception):
    """The engine is not installed or cannot run here (reported as status `unsupported`)."""


class ModelLoadError(Exception):
    """The model file is missing, corrupt or not loadable by this runtime."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Runtime:
    """Base class; one instance per job."""

    name = "base"
    formats: tuple[str, ...] = ()

    def version(self) -> str:
        raise NotImplementedError

    def load(self, model_path: str, options: dict[str, Any]) -> None:
        raise NotImplementedError

    def input_shape(self) -> list[int | None]:
        """Declared input shape; None for a dynamic dimension."""
        raise NotImplementedError

    def input_dtype(self) -> np.dtype:
        raise NotImplementedError

    def set_input(self, x: np.ndarray) -> None:
        """Put a float32 tensor into runtime memory (quantizing it if the model wants int8)."""
        raise NotImplementedError

    def run(self) -> None:
        """Execute on the input already in runtime memory, outputs left in runtime memory: the
        runtime's own run, what onnxruntime_perf_test and benchmark_model time (scope
        `runtime`)."""
        raise NotImplementedError

    def run_end_to_end(self) -> None:
        """Numpy in, numpy out through the engine's Python API, what an application pays
        (scope `end_to_end`): input copied in, run, output copied out."""
        raise NotImplementedError

    def output(self) -> np.ndarray:
        """The first output of the last run, fetched to host memory as float32 (dequantized if
        needed); outside the timer."""
        raise NotImplementedError

    def options_used(self) -> dict[str, Any]:
        """The settings actually in force, as the engine reports them."""
        return {}

    def close(self) -> None:
        pass


def first_line(err: BaseException) -> str:
    """An engine's exception as one line (they tend to be multi-line C++ dumps)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else repr(err)


def get_runtime(name: str) -> Runtime:
    """Instantiate runtime `name`; KeyError naming the known ones, RuntimeUnavailable if absent."""
    if name not in RUNTIME_MODULES:
        raise KeyError("unknown runtime {!r}; known: {}".format(
            name, ", ".join(sorted(RUNTIME_MODULES))))
    try:
        module = importlib.import_module(RUNTIME_MODULES[name], __name__)
    except ImportError as err:
        raise RuntimeUnavailable(f"{name} is not installed on this device ({err})") from err
    return module.RUNTIME()


def available_runtimes() -> dict[str, dict[str, Any]]:
    """Which runtimes can be used here, with versions or the reason they cannot."""
    found: dict[str, dict[str, Any]] = {}
    for name in sorted(RUNTIME_MODULES):
        try:
            rt = get_runtime(name)
            found[name] = {"available": True, "version": rt.version()}
        except RuntimeUnavailable as err:
            found[name] = {"available": False, "reason": str(err)}
    return found


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(x / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - zero_point) * np.float32(scale)
