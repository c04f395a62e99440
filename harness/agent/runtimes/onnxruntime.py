"""ONNX Runtime: CPU provider by default; providers, threads and graph optimisation configurable.

The timed step is `run_with_iobinding` on an input and outputs bound once (an OrtValue input and
the output OrtValues of the first run re-bound), as onnxruntime_perf_test times it: no Python-side
validation, OrtValue creation or output copy inside the timer. `run_end_to_end` is `session.run`
with numpy in and out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort  # ImportError -> `unsupported` (see the registry)

from . import ModelLoadError, Runtime, first_line

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    formats = ("onnx",)

    def __init__(self) -> None:
        self.session: Any = None
        self.feed: dict[str, np.ndarray] = {}
        self.binding: Any = None
        self._outputs_bound = False
        self._last: Any = None
        self._options: dict[str, Any] = {}

    def version(self) -> str:
        return str(ort.__version__)

    def load(self, model_path: str, options: dict[str, Any]) -> None:
        so = ort.SessionOptions()
        threads = options.get("threads")
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = int(options.get("inter_op_threads", 1))
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = options.get("graph_optimization_level", "all")
        if level not in _OPT_LEVELS:
            raise ModelLoadError("bad_option", "graph_optimization_level {!r}; known: {}".format(
                level, ", ".join(sorted(_OPT_LEVELS))))
        so.graph_optimization_level = _OPT_LEVELS[level]
        so.log_severity_level = 3
        providers = options.get("providers") or ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise ModelLoadError("bad_option", "execution providers not available here: {}; "
                                 "available: {}".format(", ".join(missing),
                                                        ", ".join(ort.get_available_providers())))
        try:
            self.session = ort.InferenceSession(model_path, sess_options=so, providers=providers)
        except Exception as err:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise ModelLoadError(
                "model_invalid", f"onnxruntime cannot load {model_path}: {first_line(err)}"
            ) from err
        self._input = self.session.get_inputs()[0]
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._options = {
            "providers": self.session.get_providers(),
            "intra_op_threads": so.intra_op_num_threads,
            "inter_op_threads": so.inter_op_num_threads,
            "graph_optimization_level": level,
            "execution_mode": "sequential",
        }

    def input_shape(self) -> list[int | None]:
        return [d if isinstance(d, int) else None for d in self._input.shape]

    def input_dtype(self) -> np.dtype:
        return np.dtype(_NUMPY_TYPES.get(self._input.type, np.float32))

    def set_input(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=self.input_dtype())
        self.feed = {self._input.name: x}
        self.binding = self.session.io_binding()
        self.binding.bind_ortvalue_input(self._input.name, ort.OrtValue.ortvalue_from_numpy(x))
        for name in self._output_names:
            self.binding.bind_output(name, "cpu")
        self._outputs_bound = False
        self._last = self.binding

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)
        if not self._outputs_bound:
            # Keep the first run's outputs bound, so later runs write into them, allocate nothing.
            for name, value in zip(self._output_names, self.binding.get_outputs()):
                self.binding.bind_ortvalue_output(name, value)
            self._outputs_bound = True
        self._last = self.binding

    def run_end_to_end(self) -> None:
        self._last = self.session.run(self._output_names, self.feed)

    def output(self) -> np.ndarray:
        if self._last is self.binding:
            return np.asarray(self.binding.get_outputs()[0].numpy(), dtype=np.float32)
        return np.asarray(self._last[0], dtype=np.float32)

    def options_used(self) -> dict[str, Any]:
        return dict(self._options)

    def close(self) -> None:
        self.session = None


RUNTIME = OnnxRuntime
