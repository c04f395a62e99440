"""ONNX Runtime: CPU provider by default; providers, threads and graph optimisation configurable.

The timed step is `run_with_iobinding` on an input and outputs bound once (an OrtValue input and
the output OrtValues of the first run re-bound), as onnxruntime_perf_test times it: no Python-side
validation, OrtValue creation or output copy inside the timer. `run_end_to_end` is `session.run`
with numpy in and out.

Execution providers are tried in the order given; ONNX Runtime silently drops one that fails to
initialise, so `placement` compares the providers asked for with those in force. The TensorRT
provider (`TensorrtExecutionProvider`, in NVIDIA's onnxruntime-gpu builds) takes its settings from
`tensorrt: {fp16, int8, workspace_mb}` and caches what it builds in `tensorrt/` beside the model
(in the device cache on an SSH device): engines in `tensorrt/<sha256 of the model>/<settings>/`
(settings: the TensorRT version, the precision and other options that change an engine), the
timing cache (per GPU, valid for every model) in `tensorrt/` itself. ORT-TRT names an engine
after the model's path and graph structure, not its weights, so in a folder shared by all models
a rebuilt or pruned model with the same graph would run another's engine; keyed by content and
settings, an engine is built once per model file, settings, TensorRT and device, and used only
for them.
A profile session enables ONNX Runtime's own profiler at load and reads back, per node, its op
type, time and execution provider.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import tempfile
from typing import Any

import numpy as np
import onnxruntime as ort  # ImportError -> `unsupported` (see the registry)

from . import ModelLoadError, Runtime, accelerator_fallback, first_line
from .options import DEFAULT_PROVIDERS, GRAPH_OPTIMIZATION_LEVELS, TENSORRT_PROVIDER

TENSORRT = TENSORRT_PROVIDER
# A file in the device cache is named by its sha256, which the host checks on every connection.
_SHA256_NAME = re.compile("[0-9a-f]{64}")
_PRECISIONS = {"trt_fp16_enable": "fp16", "trt_int8_enable": "int8"}
# TensorRT provider options that say where ORT keeps its files, what it logs or how it runs an
# engine, not which engine TensorRT builds: they do not key the engine folder. Any other option
# (workspace, builder level, DLA, profile shapes, one this list does not know) does.
_NOT_ENGINE_OPTIONS = frozenset({
    "trt_engine_cache_enable", "trt_engine_cache_path", "trt_engine_cache_prefix",
    "trt_timing_cache_enable", "trt_timing_cache_path", "trt_detailed_build_log",
    "trt_dump_subgraphs", "trt_force_sequential_engine_build",
    "trt_context_memory_sharing_enable", "trt_cuda_graph_enable", "trt_dump_ep_context_model",
    "trt_ep_context_file_path", "trt_ep_context_embed_mode", "user_compute_stream",
    "has_user_compute_stream",
})

# by the names options.py declares (and the profile loader checks)
_OPT_LEVELS = dict(zip(GRAPH_OPTIMIZATION_LEVELS, (
    ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
)))
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
    distributions = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                     "onnxruntime-directml", "onnxruntime-training")

    def __init__(self) -> None:
        self.session: Any = None
        self.feed: dict[str, np.ndarray] = {}
        self.binding: Any = None
        self._outputs_bound = False
        self._last: Any = None
        self._options: dict[str, Any] = {}
        self._asked: list[str] = []
        self._profile_dir: str | None = None

    def version(self) -> str:
        return str(ort.__version__)

    def capabilities(self) -> dict[str, Any]:
        return {"providers": list(ort.get_available_providers())}

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
        if options.get("profile"):
            self._profile_dir = tempfile.mkdtemp(prefix="edgebench-ort-profile-")
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(self._profile_dir, "ort")
        providers = list(options.get("providers") or DEFAULT_PROVIDERS)
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise ModelLoadError("bad_option", "execution providers not available here: {}; "
                                 "available: {}".format(", ".join(missing),
                                                        ", ".join(ort.get_available_providers())))
        self._asked = providers
        try:
            provider_options = [self._provider_options(p, model_path, options) for p in providers]
            for p, opts in zip(providers, provider_options):
                if p == TENSORRT and _on(opts.get("trt_engine_cache_enable")):
                    # ORT makes only the last folder of the path (create_directory, not
                    # create_directories), and tensorrt/<sha256> may not exist yet
                    os.makedirs(str(opts["trt_engine_cache_path"]), exist_ok=True)
        except OSError as err:
            raise ModelLoadError("tensorrt_cache", "cannot prepare TensorRT's engine cache for "
                                 f"{model_path}: {err}") from err
        try:
            self.session = ort.InferenceSession(model_path, sess_options=so, providers=providers,
                                                provider_options=provider_options)
        except Exception as err:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            if type(err).__name__ == "NotImplemented":  # a sound model, a kernel this build lacks
                raise ModelLoadError(
                    "op_unsupported", f"onnxruntime {ort.__version__} here has no kernel for an "
                    f"operator of {model_path}: {first_line(err)}", unsupported=True) from err
            too_new = newer_than_runtime(str(err))
            if too_new:
                raise ModelLoadError("model_too_new", f"onnxruntime {ort.__version__} here "
                                     f"cannot load {model_path}: {too_new}",
                                     unsupported=True) from err
            raise ModelLoadError(
                "model_invalid", f"onnxruntime cannot load {model_path}: {first_line(err)}"
            ) from err
        self._input = self.session.get_inputs()[0]
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._options = {
            "providers": self.session.get_providers(),
            "providers_requested": providers,
            "provider_options": {p: o for p, o in zip(providers, provider_options) if o},
            "intra_op_threads": so.intra_op_num_threads,
            "inter_op_threads": so.inter_op_num_threads,
            "graph_optimization_level": level,
            "execution_mode": "sequential",
        }
        if TENSORRT in providers:
            self._options["tensorrt_version"] = tensorrt_version()

    @staticmethod
    def _provider_options(provider: str, model_path: str, options: dict[str, Any]
                          ) -> dict[str, Any]:
        """Options of one execution provider: `provider_options: {NAME: {...}}` as given, and
        for TensorRT the `tensorrt` settings and its caches beside the model: engines in
        `tensorrt/<model sha256>/<engine_settings>/`, the timing cache in `tensorrt/`. Hashes
        the model file for TensorRT where its name is not its sha256 (the local device); a path
        given in `provider_options` is kept as given."""
        out = dict((options.get("provider_options") or {}).get(provider) or {})
        if provider == TENSORRT:
            trt = options.get("tensorrt") or {}
            out.setdefault("trt_fp16_enable", bool(trt.get("fp16", False)))
            out.setdefault("trt_int8_enable", bool(trt.get("int8", False)))
            if trt.get("workspace_mb"):
                out.setdefault("trt_max_workspace_size", int(trt["workspace_mb"]) * 2**20)
            cache = os.path.join(os.path.dirname(os.path.abspath(model_path)), "tensorrt")
            out.setdefault("trt_engine_cache_enable", True)
            if "trt_engine_cache_path" not in out:
                out["trt_engine_cache_path"] = os.path.join(
                    cache, model_sha256(model_path), engine_settings(out, tensorrt_version()))
            out.setdefault("trt_timing_cache_enable", True)
            out.setdefault("trt_timing_cache_path", cache)
        return out

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

    def placement(self) -> dict[str, Any] | None:
        in_force = list(self.session.get_providers())
        reasons = accelerator_fallback(self._asked, in_force)
        return {"requested": list(self._asked), "in_force": in_force,
                "cpu_fallback": bool(reasons), "fallback_reasons": reasons}

    def prepare_profile(self, options: dict[str, Any]) -> dict[str, Any]:
        return dict(options, profile=True)

    def profile(self, step: Any, iterations: int) -> dict[str, Any]:
        if self._profile_dir is None:
            raise ValueError("the session was not loaded for profiling (prepare_profile)")
        for _ in range(iterations):
            step()
        path = self.session.end_profiling()
        try:
            with open(path) as fh:
                events = json.load(fh)
        finally:
            os.unlink(path)
        return summarize_profile(events, iterations, self.placement() or {})

    def close(self) -> None:
        self.session = None
        if self._profile_dir is not None:
            try:
                os.rmdir(self._profile_dir)
            except OSError:
                pass


# What ONNX Runtime says where a file is newer than it reads (its checks in model.cc and
# model_load_utils.h, as onnxruntime 1.12.1 words them), each behind a C++ signature.
_IR_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
_OPSET_TOO_NEW = re.compile(r"Opset (\d+) is under development.*Current official support for "
                            r"domain (\S+) is till opset (\d+)", re.S)


# What to do about it. edgebench writes an ONNX file at the lowest IR version its opsets need
# (8 up to opset 18) and imports only the opsets its nodes use (`compress.export.finish_onnx`):
# a file too new in those ways was saved by something else, or by an older edgebench.
IR_ADVICE = ("build it again with edgebench, which saves each file at the lowest IR version "
             "its opsets need, or update onnxruntime")
ML_ADVICE = ("build it again with edgebench, which keeps only the opsets a file's nodes use, "
             "or update onnxruntime")


def newer_than_runtime(message: str) -> str | None:
    """Why ONNX Runtime refused a file, in one line, where the file is newer than this runtime
    reads (an ONNX IR version or an opset it does not know yet); None for any other error."""
    ir = _IR_TOO_NEW.search(message)
    if ir:
        used, most = ir.groups()
        return (f"it reads ONNX IR versions up to {most} and the file is IR {used}: "
                + IR_ADVICE)
    opset = _OPSET_TOO_NEW.search(message)
    if opset:
        used, domain, most = opset.groups()
        if domain in ("ai.onnx", ""):
            how = f"build it with the suite's `onnx: {{opset: {most}}}`, or update onnxruntime"
        else:
            how = ML_ADVICE
        return f"it reads {domain} opsets up to {most} and the file uses opset {used}: {how}"
    return None


def model_sha256(model_path: str) -> str:
    """The sha256 of the model file: its name where it is named by it (the device cache), else
    read here in blocks."""
    name = os.path.basename(model_path)
    if _SHA256_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256()
    with open(model_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _on(value: Any) -> bool:
    """A provider option's flag as ORT reads it (`True`, `1`, `"true"`)."""
    return str(value).strip().lower() in ("1", "true")


def engine_settings(trt_options: dict[str, Any], version: str | None = None) -> str:
    """The engine folder's name for TensorRT provider options: `trt` and the TensorRT version
    when it is known (an engine is bound to the TensorRT that built it: after an upgrade the old
    one cannot be loaded), then the precision TensorRT may build in (`fp32`, `fp16`, `int8`,
    `fp16+int8`), then `-` and 8 hex of a hash of the other options that change the engine
    (`trt_max_workspace_size`, `trt_builder_optimization_level`, ...) when any is set:
    `trt10.3.0-fp16`."""
    precision = "+".join(name for key, name in _PRECISIONS.items()
                         if _on(trt_options.get(key))) or "fp32"
    name = f"trt{version}-{precision}" if version else precision
    shaping = {k: str(v) for k, v in trt_options.items()
               if k not in _NOT_ENGINE_OPTIONS and k not in _PRECISIONS}
    if not shaping:
        return name
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()
    return f"{name}-{digest[:8]}"


# The sonames of libnvinfer (TensorRT's core library) that ONNX Runtime's TensorRT provider
# links against, newest first.
_NVINFER = ("libnvinfer.so.10", "libnvinfer.so.9", "libnvinfer.so.8", "libnvinfer.so.7")


def tensorrt_version(libraries: tuple = _NVINFER) -> str | None:
    """The version of the TensorRT library the dynamic linker finds, as that library says it
    (`getInferLibVersion()`), e.g. `10.3.0`; None where there is none. ONNX Runtime's TensorRT
    provider loads the same library by the same name, so this costs no extra load."""
    for name in libraries:
        try:
            number = int(ctypes.CDLL(name).getInferLibVersion())
        except (OSError, AttributeError):
            continue
        return decode_tensorrt_version(number)
    return None


def decode_tensorrt_version(number: int) -> str:
    """TensorRT's version integer as `major.minor.patch`: major*10000 + minor*100 + patch from
    TensorRT 10 (its minors passed 9), major*1000 + minor*100 + patch before."""
    if number >= 100000:
        major, rest = divmod(number, 10000)
    else:
        major, rest = divmod(number, 1000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def summarize_profile(events: list[dict[str, Any]], iterations: int,
                      placement: dict[str, Any]) -> dict[str, Any]:
    """Per-node figures of the last `iterations` runs of an ONNX Runtime profile (Chrome trace
    events): the runs before them (first inference, warm-up) are left out."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    runs = sorted(runs, key=lambda e: e["ts"])[-iterations:]
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in runs]
    nodes: dict[str, dict[str, Any]] = {}
    raw = []
    for e in events:
        if e.get("cat") != "Node" or not any(lo <= e["ts"] <= hi for lo, hi in windows):
            continue
        args = e.get("args") or {}
        if "op_name" not in args:  # fence events of a node, not its kernel
            continue
        name = e["name"][:-len("_kernel_time")] if e["name"].endswith("_kernel_time") \
            else e["name"]
        node = nodes.setdefault(name, {"name": name, "op_type": args["op_name"],
                                       "provider": args.get("provider", "?"), "calls": 0,
                                       "time_us": 0})
        node["calls"] += 1
        node["time_us"] += e.get("dur", 0)
        raw.append({"name": name, "ts": e["ts"], "dur": e.get("dur"),
                    **{k: args[k] for k in ("op_name", "provider", "node_index",
                                            "input_type_shape", "output_type_shape") if k in args}})
    n = max(len(windows), 1)
    ops = [{"name": v["name"], "op_type": v["op_type"], "provider": v["provider"],
            "calls": v["calls"] // n or 1, "time_ms": v["time_us"] / 1e3 / n}
           for v in nodes.values()]
    ops.sort(key=lambda o: -o["time_ms"])
    by_provider: dict[str, dict[str, Any]] = {}
    for op in ops:
        p = by_provider.setdefault(op["provider"], {"nodes": 0, "time_ms": 0.0})
        p["nodes"] += 1
        p["time_ms"] += op["time_ms"]
    cpu_ops = [op["op_type"] for op in ops if op["provider"] == "CPUExecutionProvider"]
    reasons = accelerator_fallback(list(placement.get("requested") or []),
                                   list(placement.get("in_force") or []), cpu_ops)
    placed = dict(placement, providers=by_provider, cpu_fallback=bool(reasons),
                  fallback_reasons=reasons)
    return {"tool": "onnxruntime", "onnxruntime": str(ort.__version__),
            "iterations": len(windows), "timed": True, "ops": ops, "placement": placed,
            "raw": raw}


RUNTIME = OnnxRuntime
