"""PyTorch: a `torch.export` program (`.pt2`) on the CPU or a CUDA GPU.

Options (`runtime_options: {torch: {...}}` in a device profile): `device` (`cpu`, `cuda`,
`cuda:N`), `precision` (`fp32`, `fp16`, `bf16`: weights and input cast to it; the output is
compared in float32), `cuda_graphs` (capture the model call once into a CUDA graph and replay it).

On the CPU the timed step is the model call, timed by the host clock like every runtime. On a GPU
it is the model call between two CUDA events, each iteration synchronised on the end event: the
samples are the GPU's own elapsed times (`timer: cuda_events`), and the host clock around the
same step, synchronisation included, is kept beside them as the wall time. With `cuda_graphs`
the timed step is `graph.replay()` on the static input captured once. The allocator's peak
(`torch.cuda.max_memory_allocated`, reset before the timed window) is the GPU memory figure.
`profile` runs `torch.profiler` (CPU operators, and CUDA kernels on a GPU).

torch is imported only when this runtime is asked for; the rest of the agent never imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch  # ImportError -> `unsupported` (see the registry)

from . import ModelLoadError, Runtime, first_line
from .options import TORCH_PRECISIONS

# by the names options.py declares (and the profile loader checks)
_DTYPES = dict(zip(TORCH_PRECISIONS, (torch.float32, torch.float16, torch.bfloat16)))


def _first(out: Any) -> Any:
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


def _op_type(name: str) -> str:
    """A readable operator type: aten ops as they are, CUDA kernels cut before their template
    and argument lists."""
    for stop in ("<", "("):
        name = name.split(stop, 1)[0]
    return name.replace("void ", "").strip()[:80] or "?"


class TorchRuntime(Runtime):
    name = "torch"
    formats = ("torch",)

    def __init__(self) -> None:
        self.program: Any = None
        self.model: Any = None
        self.device: Any = None
        self.dtype: Any = torch.float32
        self._x: Any = None
        self._host_x: np.ndarray | None = None
        self._e2e: np.ndarray | None = None  # kept so the copy out is not optimised away
        self._out: Any = None
        self._graph: Any = None
        self._events: Any = None
        self._device_ns: list[int] = []
        self._inference: Any = None
        self._options: dict[str, Any] = {}
        self._threads_before: int | None = None

    def version(self) -> str:
        return str(torch.__version__)

    @property
    def cuda(self) -> bool:
        return self.device is not None and self.device.type == "cuda"

    def load(self, model_path: str, options: dict[str, Any]) -> None:
        precision = options.get("precision", "fp32")
        if precision not in _DTYPES:
            raise ModelLoadError("bad_option", "torch precision {!r}; known: {}".format(
                precision, ", ".join(sorted(_DTYPES))))
        try:
            device = torch.device(str(options.get("device", "cpu")))
        except RuntimeError as err:
            raise ModelLoadError("bad_option", f"torch device: {first_line(err)}") from err
        if device.type not in ("cpu", "cuda"):
            raise ModelLoadError("bad_option", f"torch device {device}; known: cpu, cuda, cuda:N")
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ModelLoadError("cuda_unavailable", f"torch device {device} asked for, but "
                                     f"torch {torch.__version__} sees no CUDA GPU here")
            if device.index is None:
                device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(device)
        cuda_graphs = bool(options.get("cuda_graphs", False))
        if cuda_graphs and device.type != "cuda":
            # the profile loader refuses this (options.py); a guard for jobs made otherwise
            raise ModelLoadError("bad_option", "runtime_options.torch.cuda_graphs needs device "
                                 f"cuda, not {device}")
        threads = options.get("threads")
        self._threads_before = torch.get_num_threads()  # restored by close (host builds)
        if threads:
            torch.set_num_threads(int(threads))
        self.device, self.dtype = device, _DTYPES[precision]
        # No autograd bookkeeping for the life of the job (what every deployment does).
        self._inference = torch.inference_mode()
        self._inference.__enter__()
        try:
            self.program = torch.export.load(model_path)
        except Exception as err:  # torch raises many types for a bad archive
            raise ModelLoadError(
                "model_invalid", f"torch cannot load {model_path}: {first_line(err)}") from err
        try:
            if device.type == "cuda":
                # A program is specialised to the device it was exported on (a CPU here): devices
                # burnt into its nodes and its constants move only with torch's own pass, which
                # `module().to()` does not do.
                from torch.export.passes import move_to_device_pass

                self.program = move_to_device_pass(self.program, device)
            self.model = self.program.module().to(device=device, dtype=self.dtype)
        except Exception as err:
            raise ModelLoadError("model_invalid", f"torch cannot put {model_path} on {device} "
                                 f"as {precision}: {first_line(err)}") from err
        if self.cuda:
            self._events = (torch.cuda.Event(enable_timing=True),
                            torch.cuda.Event(enable_timing=True))
        self._options = {
            "device": str(device),
            "precision": precision,
            "cuda_graphs": cuda_graphs,
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if self.cuda else None,
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            # TF32 trades float32 precision for speed on Ampere and later: what the process ran
            # with is part of what its figures mean (torch's defaults: convolutions yes, matmul
            # "highest", i.e. no)
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32) if self.cuda else None,
            "matmul_precision": torch.get_float32_matmul_precision(),
            # autograd's bookkeeping on every operator, or none: a guard let go of at once
            # leaves it on, and costs an eager model a third of its time on a CPU
            "inference_mode": torch.is_inference_mode_enabled(),
        }

    def input_shape(self) -> list[int | None]:
        users = set(self.program.graph_signature.user_inputs)
        for node in self.program.graph.nodes:
            if node.op == "placeholder" and node.name in users:
                val = node.meta.get("val")
                if val is not None:
                    return [d if isinstance(d, int) else None for d in val.shape]
        raise ModelLoadError("model_invalid", "torch program has no tensor input")

    def input_dtype(self) -> np.dtype:
        return np.dtype(np.float32)  # cast to `precision` on the device, outside the timer

    def set_input(self, x: np.ndarray) -> None:
        self._host_x = np.ascontiguousarray(x, dtype=np.float32)
        self._x = torch.from_numpy(self._host_x).to(device=self.device, dtype=self.dtype)
        self._graph = None
        if self._options.get("cuda_graphs"):
            self._capture()

    def _capture(self) -> None:
        """Capture the model call on the static input into a CUDA graph (after a few eager
        runs on a side stream, as capture requires)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.model(self._x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._out = self.model(self._x)
        self._graph = graph

    def _call(self) -> None:
        if self._graph is not None:
            self._graph.replay()
        else:
            self._out = self.model(self._x)

    def run(self) -> None:
        if self._events is None:
            self._call()
            return
        start, end = self._events
        start.record()
        self._call()
        end.record()
        end.synchronize()
        self._device_ns.append(int(start.elapsed_time(end) * 1e6))

    def run_end_to_end(self) -> None:
        x = torch.from_numpy(self._host_x).to(device=self.device, dtype=self.dtype)
        if self._graph is not None:
            self._x.copy_(x)
            self._graph.replay()
        else:
            self._out = self.model(x)
        self._e2e = _first(self._out).float().cpu().numpy()

    def output(self) -> np.ndarray:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return np.asarray(_first(self._out).float().cpu().numpy(), dtype=np.float32)

    def options_used(self) -> dict[str, Any]:
        return dict(self._options)

    def timer(self) -> str:
        return "cuda_events" if self.cuda else "perf_counter"

    def take_device_samples_ns(self) -> list[int] | None:
        if not self.cuda:
            return None
        samples, self._device_ns = self._device_ns, []
        return samples

    def accelerator(self) -> dict[str, Any] | None:
        if not self.cuda:
            return None
        props = torch.cuda.get_device_properties(self.device)
        uuid = str(getattr(props, "uuid", "") or "")
        return {
            "name": props.name,
            "index": self.device.index,
            "uuid": uuid if not uuid or uuid.startswith("GPU-") else "GPU-" + uuid,
            "sm_count": props.multi_processor_count,
            "compute_capability": f"{props.major}.{props.minor}",
            "memory_total_mb": props.total_memory / 2**20,
            "torch": str(torch.__version__),
            "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }

    def reset_device_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def device_memory(self) -> dict[str, Any]:
        if not self.cuda:
            return {}
        return {
            "gpu_allocated_peak_mb": torch.cuda.max_memory_allocated(self.device) / 2**20,
            "gpu_reserved_peak_mb": torch.cuda.max_memory_reserved(self.device) / 2**20,
        }

    def placement(self) -> dict[str, Any] | None:
        if self._options.get("device", "cpu") == "cpu":
            return None
        devices = sorted({str(p.device) for p in self.model.parameters()}
                         | {str(b.device) for b in self.model.buffers()})
        on_cpu = [d for d in devices if d == "cpu"]
        return {"requested": [self._options["device"]], "in_force": devices,
                "cpu_fallback": bool(on_cpu),
                "fallback_reasons": ["weights on the CPU"] if on_cpu else []}

    def profile(self, step: Any, iterations: int) -> dict[str, Any]:
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        activities = [ProfilerActivity.CPU]
        if self.cuda:
            activities.append(ProfilerActivity.CUDA)
        with torch_profile(activities=activities) as prof:
            for _ in range(iterations):
                step()
            if self.cuda:
                torch.cuda.synchronize(self.device)
        raw, ops = [], []
        for event in prof.key_averages():
            self_device = float(getattr(event, "self_device_time_total", 0.0) or 0.0)
            self_cpu = float(event.self_cpu_time_total or 0.0)
            # An aten op's self device time is that of the kernels it launched: on a GPU only
            # the kernels themselves (device events) are counted, or each would count twice.
            on_device = event.device_type == DeviceType.CUDA
            raw.append({"name": event.key, "calls": int(event.count), "on_device": on_device,
                        "self_cpu_us": self_cpu,
                        "cpu_total_us": float(event.cpu_time_total or 0.0),
                        "self_device_us": self_device,
                        "device_total_us": float(getattr(event, "device_time_total", 0.0)
                                                 or 0.0)})
            # On a GPU the operators that cost time are its kernels; on the CPU, aten ops'
            # own (self) time, so nested calls are not counted twice.
            time_us = self_device if self.cuda else self_cpu
            if time_us > 0 and on_device == self.cuda:
                ops.append({"name": event.key, "op_type": _op_type(event.key),
                            "provider": "CUDA" if self.cuda else "CPU",
                            "calls": int(event.count) // max(iterations, 1) or 1,
                            "time_ms": time_us / 1e3 / iterations})
        ops.sort(key=lambda o: -o["time_ms"])
        return {"tool": "torch.profiler", "torch": str(torch.__version__),
                "iterations": iterations, "timed": True,
                "cuda_graphs": self._graph is not None, "ops": ops, "raw": raw}

    def close(self) -> None:
        if self._inference is not None:
            self._inference.__exit__(None, None, None)
            self._inference = None
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
        self.model = self.program = self._graph = None


RUNTIME = TorchRuntime
