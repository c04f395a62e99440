"""The options each runtime reads, declared once: `runtime_options: {RUNTIME: {...}}` of a profile.

A key a runtime does not read used to pass unseen: `providerz: [...]` for `providers` left ONNX
Runtime on the CPU with no `cpu_fallback` flag, since no accelerator counted as asked for. So the
host's profile loader refuses a key not declared here, and a value of the wrong type, naming the
field (`check_options`); and each runtime is handed its options as `Declared`, which fails on
reading a key not declared here (`UndeclaredOption`, a bug in the runtime that its first test
finds), so what the loader accepts and what the runtimes read cannot drift apart.

Besides its own options a runtime reads what edgebench sets for every job (`JOB_OPTIONS`, from
the profile's other fields and the command line); a profile gives those where they belong.

Stdlib only and no engine imported: the host reads this table without onnxruntime, LiteRT or
torch. Python 3.8 syntax, as all of the agent.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

# What edgebench puts into every job's options, and where a profile or command line sets it.
JOB_OPTIONS = {
    "threads": "the profile's own `threads` field (or bench --threads)",
    "force_threads": "bench --force-threads",
    "cpu_affinity": "the profile's own `cpu_affinity` field",
    "profile": "bench --profile",
}

# The names the runtimes map to their engine's settings (onnxruntime.py, torch.py).
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
TORCH_PRECISIONS = ("fp32", "fp16", "bf16")
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


class OptionError(ValueError):
    """A runtime option that is not declared or not of its declared type; `field` is its dotted
    path below the runtime (`providerz`, `tensorrt.fp16`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UndeclaredOption(Exception):
    """A runtime read an option this table does not declare: a bug in that runtime."""


class Spec:
    """What one option's value must be; `what` says it in words for an error."""

    what = "anything"

    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError

    def fail(self, value: Any, where: str) -> OptionError:
        return OptionError(where, f"must be {self.what}, got {value!r}")


class Flag(Spec):
    what = "true or false"

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise self.fail(value, where)


class Count(Spec):
    what = "a whole number of at least 1"

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(value, where)


class Choice(Spec):
    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)
        self.what = "one of " + ", ".join(self.choices)

    def check(self, value: Any, where: str) -> None:
        if value not in self.choices:
            raise self.fail(value, where)


class Matching(Spec):
    def __init__(self, pattern: str, what: str) -> None:
        self.pattern = re.compile(pattern)
        self.what = what

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            raise self.fail(value, where)


class Names(Spec):
    what = "a list of names"

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(value, where)


class Table(Spec):
    """A mapping whose keys are declared, each with its own spec."""

    def __init__(self, fields: Mapping[str, Spec]) -> None:
        self.fields = dict(fields)
        self.what = "a mapping of " + ", ".join(sorted(self.fields))

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise self.fail(value, where)
        check_keys(self.fields, value, where + ".")


class Passed(Spec):
    """`{NAME: {option: value}}` handed to the engine as given (ONNX Runtime's provider options:
    too many, and too many per version, to declare here)."""

    what = "a mapping of NAME: {option: value}"

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise self.fail(value, where)
        for name, inner in value.items():
            if not isinstance(inner, dict):
                raise OptionError(f"{where}.{name}",
                                  f"must be a mapping of option: value, got {inner!r}")


OPTIONS: dict[str, dict[str, Spec]] = {
    "onnxruntime": {
        "providers": Names(),  # execution providers, tried in this order
        "inter_op_threads": Count(),
        "graph_optimization_level": Choice(GRAPH_OPTIMIZATION_LEVELS),
        "tensorrt": Table({"fp16": Flag(), "int8": Flag(), "workspace_mb": Count()}),
        "provider_options": Passed(),
    },
    "tflite": {
        "xnnpack": Flag(),
        "delegates": Names(),  # shared libraries loaded as LiteRT delegates (libedgetpu.so.1)
    },
    "torch": {
        "device": Matching(r"(cpu|cuda)(:[0-9]+)?", "cpu, cuda or cuda:N"),
        "precision": Choice(TORCH_PRECISIONS),
        "cuda_graphs": Flag(),
    },
}


def check_keys(fields: Mapping[str, Spec], options: Mapping[str, Any], prefix: str = "") -> None:
    for key in sorted(options, key=str):
        spec = fields.get(key)
        if spec is None:
            raise OptionError(prefix + str(key), "unknown option; known: {}".format(
                ", ".join(sorted(fields)) or "none"))
        spec.check(options[key], prefix + str(key))


def check_options(runtime: str, options: Mapping[str, Any]) -> None:
    """Refuse (OptionError) an option `runtime` does not read, one of the wrong type, and one
    that the options around it leave unused; the options edgebench sets (`JOB_OPTIONS`) are
    said to belong elsewhere."""
    for key in sorted(options, key=str):
        if key in JOB_OPTIONS:
            raise OptionError(str(key), f"set by edgebench from {JOB_OPTIONS[key]}, not a "
                              "runtime option")
    check_keys(OPTIONS[runtime], options)
    if runtime == "onnxruntime":
        _check_onnxruntime(options)
    elif runtime == "torch":
        _check_torch(options)


def _check_onnxruntime(options: Mapping[str, Any]) -> None:
    # options for a provider that is not asked for are never read: a misspelt provider name
    # there would leave its settings out without a word
    providers = options.get("providers") or list(DEFAULT_PROVIDERS)
    for name in options.get("provider_options") or {}:
        if name not in providers:
            raise OptionError(f"provider_options.{name}", "not among the providers asked "
                              f"for ({', '.join(providers)}), so never used")
    if "tensorrt" in options and TENSORRT_PROVIDER not in providers:
        raise OptionError("tensorrt", f"settings of {TENSORRT_PROVIDER}, which providers does "
                          "not list, so never used")


def _check_torch(options: Mapping[str, Any]) -> None:
    # a CUDA graph is captured on a GPU: on the CPU every job failed at load, each a failed run
    # whose message named neither the profile nor this field
    device = str(options.get("device", "cpu"))
    if options.get("cuda_graphs") and not device.startswith("cuda"):
        raise OptionError("cuda_graphs", "true needs device cuda (or cuda:N); device is "
                          f"{device}{'' if 'device' in options else ' (the default)'}")


class Declared(dict):  # type: ignore[type-arg]
    """A runtime's options as the job gives them, read only by the keys declared for it (and
    those edgebench sets); a table option is read the same way, one level down."""

    def __init__(self, fields: Mapping[str, Spec], options: Mapping[str, Any],
                 owner: str) -> None:
        super().__init__(options)
        self._fields = fields
        self._owner = owner

    def _spec(self, key: Any) -> Spec | None:
        if key in self._fields:
            return self._fields[key]
        if key in JOB_OPTIONS and "." not in self._owner:
            return None
        raise UndeclaredOption(f"{self._owner} reads option {key!r}, which "
                               "harness/agent/runtimes/options.py does not declare")

    def _wrap(self, key: Any, value: Any) -> Any:
        spec = self._spec(key)
        if isinstance(spec, Table) and isinstance(value, dict):
            return Declared(spec.fields, value, f"{self._owner}.{key}")
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        return self._wrap(key, super().get(key, default))

    def __getitem__(self, key: Any) -> Any:
        return self._wrap(key, super().__getitem__(key))

    def __contains__(self, key: Any) -> bool:
        self._spec(key)
        return super().__contains__(key)


def declared(runtime: str, options: Mapping[str, Any]) -> Declared:
    """`options` for `runtime`, read only by declared keys."""
    return Declared(OPTIONS[runtime], options, runtime)
