"""Runtimes register by name; the job's `runtime` field picks one.

A runtime wraps one inference engine behind the few operations the protocol needs: load a model,
say what input it wants, put an input into runtime memory, execute and fetch outputs. Modules are
imported lazily so a device without, say, torch can still run the others; a runtime whose engine
is not installed reports `unsupported` with the reason.

Beyond timing, a runtime may say where the model ran (`placement`: execution providers, delegated
operators, and whether it fell back to the CPU where an accelerator was asked for), time on the
accelerator itself (`timer` `cuda_events`, with `take_device_samples_ns`), report accelerator
memory, and profile operators in a session of their own (`profile`); the defaults say "not
offered".
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import numpy as np

# name -> module (relative to this package) that defines `RUNTIME`
RUNTIME_MODULES = {
    "onnxruntime": ".onnxruntime",
    "tflite": ".tflite",
    "torch": ".torch",
}

# Operators that runtimes put on the CPU by design next to an accelerator (shape arithmetic,
# copies between memories): running them there is no fallback.
HOST_SIDE_OPS = frozenset({
    "Shape", "Reshape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast",
    "Constant", "ConstantOfShape", "Identity", "Flatten", "MemcpyToHost", "MemcpyFromHost",
    "Range", "Size",
})


class RuntimeUnavailable(Exception):
    """The engine is not installed or cannot run here (reported as status `unsupported`)."""


class ModelLoadError(Exception):
    """The model file is missing, corrupt or not loadable by this runtime; `unsupported`: the
    file is sound but this runtime build lacks what it needs (an operator's kernel)."""

    def __init__(self, kind: str, message: str, unsupported: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.unsupported = unsupported


class ProfileUnsupported(Exception):
    """This runtime (or this engine build) offers no per-operator profile."""


class Runtime:
    """Base class; one instance per job."""

    name = "base"
    formats: tuple[str, ...] = ()
    # the pip distributions the engine may come from, for what it declares it needs
    distributions: tuple[str, ...] = ()

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

    def capabilities(self) -> dict[str, Any]:
        """What `devices check` should know beyond the version (ORT: execution providers)."""
        return {}

    def timer(self) -> str:
        """What the per-iteration samples measure: `perf_counter` (the host clock around `run`)
        or `cuda_events` (CUDA events around the model call on the GPU's own clock)."""
        return "perf_counter"

    def take_device_samples_ns(self) -> list[int] | None:
        """Samples timed on the accelerator since the last call (then forgotten); None when the
        timer is the host clock."""
        return None

    def accelerator(self) -> dict[str, Any] | None:
        """The accelerator the model runs on as the framework sees it (name, SM count, CUDA
        version...); None on the CPU."""
        return None

    def reset_device_peak(self) -> None:
        """Start a new accelerator memory peak (before the timed window)."""

    def device_memory(self) -> dict[str, Any]:
        """Accelerator memory from the framework's allocator (MB): peak since the reset."""
        return {}

    def placement(self) -> dict[str, Any] | None:
        """Where the model runs: providers or delegates asked for and in force, nodes per
        provider, `cpu_fallback` when part or all of it runs on the CPU where an accelerator
        was asked for; None where there is only one place."""
        return None

    def prepare_profile(self, options: dict[str, Any]) -> dict[str, Any]:
        """Options for `load` in a profile session (ORT must enable its profiler at load)."""
        return options

    def profile(self, step: Any, iterations: int) -> dict[str, Any]:
        """Run `step` `iterations` times under the engine's profiler: `{"tool", "iterations",
        "timed", "ops": [{name, op_type, provider, calls, time_ms}], "raw": ...}`, times per
        inference. ProfileUnsupported where the engine has none."""
        raise ProfileUnsupported(f"{self.name} offers no per-operator profile")

    def close(self) -> None:
        pass


def first_line(err: BaseException) -> str:
    """An engine's exception as one line (they tend to be multi-line C++ dumps)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else repr(err)


def accelerator_fallback(asked: list[str], in_force: list[str],
                         cpu_ops: list[str] | None = None) -> list[str]:
    """Why a model counts as fallen back to the CPU: accelerators asked for but not in force,
    and operators of other than shape/copy type that ran on the CPU (`cpu_ops`, by op type);
    empty when nothing fell back or no accelerator was asked for."""
    accelerators = [p for p in asked if p not in ("CPUExecutionProvider", "cpu", "CPU")]
    if not accelerators:
        return []
    why = [f"{p} asked for but not in force" for p in accelerators if p not in in_force]
    compute = sorted({op for op in cpu_ops or () if op not in HOST_SIDE_OPS})
    if compute:
        why.append("ran on the CPU: {}".format(", ".join(compute)))
    return why


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


# Runtimes whose engine is too heavy to import just to say it is there (torch takes seconds and
# hundreds of MB): `available_runtimes` reads the version the package wrote for itself instead
# (`torch/version.py`: `2.14.1+cu130`, the build tag that tells a CUDA build from a CPU one, which
# the package metadata, `2.14.1`, leaves out), and imports it only to try a GPU a profile asks for.
CHECKED_WITHOUT_IMPORT = {"torch": "torch"}


def available_runtimes(options: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Which runtimes can be used here, with versions or the reason they cannot. `options` are
    the profile's `runtime_options`: a torch `device` there other than the CPU is tried
    (`devices`), since a CUDA build without a GPU it can use fails every job."""
    import importlib.util

    found: dict[str, dict[str, Any]] = {}
    for name in sorted(RUNTIME_MODULES):
        package = CHECKED_WITHOUT_IMPORT.get(name)
        if package is not None:
            spec = importlib.util.find_spec(package)
            if spec is None:
                found[name] = {"available": False,
                               "reason": f"{name} is not installed on this device"}
                continue
            found[name] = {"available": True, **_own_version(spec)}
            device = str(((options or {}).get(name) or {}).get("device", "cpu"))
            if name == "torch" and device != "cpu":
                found[name]["devices"] = {device: torch_device(device)}
            continue
        try:
            rt = get_runtime(name)
            found[name] = {"available": True, "version": rt.version(), **rt.capabilities()}
            # a warning, not a refusal: a declared minimum is often stricter than the need
            # (onnxruntime 1.12.1 declares numpy>=1.21 and runs on 1.17.4)
            warning = numpy_older_than_declared(installed_distribution(rt.distributions))
            if warning:
                found[name]["warning"] = warning
        except RuntimeUnavailable as err:
            found[name] = {"available": False, "reason": str(err)}
    return found


def _own_version(spec: Any) -> dict[str, Any]:
    """`version` (and `cuda`, the CUDA it was built for, None for a CPU build) from the
    package's own `version.py`, read and not imported; the package metadata's where there is
    none."""
    import ast
    import os

    values: dict[str, Any] = {}
    for folder in spec.submodule_search_locations or ():
        try:
            with open(os.path.join(folder, "version.py"), encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name):
                try:
                    values[target.id] = ast.literal_eval(value)
                except ValueError:
                    pass
        break
    if isinstance(values.get("__version__"), str):
        return {"version": values["__version__"], "cuda": values.get("cuda")}
    return {"version": _package_version(spec.name)}


def torch_device(device: str) -> dict[str, Any]:
    """Whether torch can run on `device` (`cuda`, `cuda:1`) here, as a job would ask: imports
    torch, which only a check for a profile that asks for a GPU does."""
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - a torch that cannot load is no device either
        return {"available": False, "reason": f"torch cannot be imported: {first_line(err)}"}
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    build = f"torch {torch.__version__}"
    if not torch.version.cuda:
        return {"available": False, "reason": f"{build} is a CPU build: no CUDA"}
    if not torch.cuda.is_available():
        return {"available": False, "reason": f"{build} sees no CUDA GPU here"}
    count = torch.cuda.device_count()
    if index >= count:
        return {"available": False,
                "reason": f"{build} sees {count} CUDA GPU{'s' if count != 1 else ''}"}
    return {"available": True, "name": str(torch.cuda.get_device_name(index))}


def _package_version(package: str) -> str:
    try:
        from importlib import metadata

        return str(metadata.version(package))
    except Exception:  # noqa: BLE001 - a version we cannot read is not a missing engine
        return "unknown"


def installed_distribution(candidates: tuple[str, ...]) -> str | None:
    """The first of the pip distributions `candidates` installed here (onnxruntime's module
    comes from `onnxruntime`, `onnxruntime-gpu`, ...); None where none is."""
    from importlib import metadata

    for name in candidates:
        try:
            metadata.version(name)
        except Exception:  # noqa: BLE001 - PackageNotFoundError, or metadata it cannot read
            continue
        return name
    return None


def declared_numpy(distribution: str | None) -> str | None:
    """The oldest numpy the pip distribution declares it needs (`1.23.2` of `numpy >=1.23.2`);
    None where it declares no minimum or its metadata cannot be read."""
    if distribution is None:
        return None
    from importlib import metadata

    try:
        requires = metadata.requires(distribution) or []
    except Exception:  # noqa: BLE001 - no metadata: nothing declared
        return None
    return numpy_minimum(requires)


def numpy_minimum(requires: list[str]) -> str | None:
    """The `>=` bound on numpy among requirements as package metadata writes them (`numpy
    >=1.23.2`, `numpy (>=1.21.0)`, `numpy>=1.21.6; python_version < "3.11"`), optional ones
    (`extra == ...`) left out."""
    for requirement in requires:
        spec, _, marker = requirement.partition(";")
        if "extra" in marker:  # an optional dependency
            continue
        found = re.fullmatch(r"\s*numpy\s*\(?\s*([<>=!~][^)]*)?\)?\s*", spec)
        for clause in (found.group(1) or "").split(",") if found else ():
            if clause.strip().startswith(">="):
                return clause.strip()[2:].strip()
    return None


def release(version: str) -> tuple[int, ...]:
    """The release numbers of a version (`2.9.1` of `2.9.1`, `1.23.0` of `1.23.0rc1`)."""
    found = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(n) for n in found.group(0).split(".")) if found else ()


def numpy_older_than_declared(distribution: str | None) -> str | None:
    """One line where numpy here is older than the pip distribution declares it needs: a
    binary module built against a newer numpy fails when it is used, not when it is imported
    (`module compiled against API version 0x10 but this version of numpy is 0xd`, on stderr
    alone); None where it is not, or nothing is declared."""
    need = declared_numpy(distribution)
    if need is None or release(np.__version__) >= release(need):
        return None
    version = _package_version(str(distribution))
    return (f"numpy {np.__version__} here is older than the numpy >={need} that {distribution} "
            f"{version} declares")


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(x / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - zero_point) * np.float32(scale)
