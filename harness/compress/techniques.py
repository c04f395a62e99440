"""The technique registry: every compression step a recipe can name.

A technique is one registered step with declared default parameters, a range check and a short
label for the artifact's technique string. Two stages exist:

- ``torch``: takes an `nn.Module` and returns one (distillation, pruning, low-rank, QAT); these
  chain, each step's output feeding the next;
- ``quantize``: rewrites an exported fp32 file into a quantized one of the same format (ONNX
  Runtime post-training quantization, LiteRT fp16/int8); it must be a recipe's last step.

A ``torch`` step may name a quantize step that its output must go through at export
(`then_quantize`): quantization-aware training trains with fake quantization and is then
converted by the same quantizer whose rounding it was trained for.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.artifacts import BUILD_FORMATS
from harness.registry import Registry

TORCH, QUANTIZE = "torch", "quantize"

# Modules that register techniques; imported on first use so that loading a suite stays cheap.
_IMPLEMENTATIONS = (
    "harness.compress.quantize",
    "harness.compress.prune",
    "harness.compress.distill",
    "harness.compress.lowrank",
)


class ParamError(ValueError):
    """A parameter out of range or of the wrong type, naming it (`param`) where it is one; a
    suite's are checked when it is loaded (suite.py), so at build this is what only the model
    shows (a rank that shrinks no layer) or a technique without a `check`."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Technique:
    name: str
    stage: str
    apply: Callable[..., Any]
    defaults: dict[str, Any]
    label: Callable[[dict[str, Any]], str]
    # Every parameter's type and range, run on the defaults overlaid with a suite's values when
    # the suite is loaded and again when the step is built; raises ParamError naming the
    # parameter. A technique without one (registered from outside harness) is checked by its
    # own code at build.
    check: Callable[[dict[str, Any]], None] = lambda params: None
    precision: str | None = None  # precision of the output when this step changes it
    formats: tuple[str, ...] = BUILD_FORMATS
    then_quantize: str | None = None
    doc: str = field(default="", compare=False)
    # The parameters whose value names a local file (a student's weights): the build key hashes
    # the file's content, so an artifact is rebuilt when the file changes, not only its name.
    files: tuple[str, ...] = ()
    # Parameters whose None means the model's `train:` setting of that name (else the training
    # default): the manifest records the value used, not None.
    from_train: tuple[str, ...] = ()
    # Parameters that apply to some formats only (param -> those formats): a quantize step's
    # ONNX Runtime options have no effect on a TFLite file, and its record leaves them out.
    param_formats: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def with_train_settings(self, params: dict[str, Any], setting: Callable[[str], Any]
                            ) -> dict[str, Any]:
        """`params` with each `from_train` parameter left None set to `setting(name)`."""
        return {**params, **{k: setting(k) for k in self.from_train if params.get(k) is None}}

    def applied(self, params: dict[str, Any], fmt: str) -> dict[str, Any]:
        """The parameters that have an effect on a file of format `fmt`."""
        return {k: v for k, v in params.items() if fmt in self.param_formats.get(k, (fmt,))}

    def file_params(self, params: dict[str, Any]) -> dict[str, Path]:
        """The files `params` name, by parameter, as the technique opens them."""
        return {key: param_path(params[key]) for key in self.files if params.get(key)}

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with `params`, range-checked; ParamError names the parameter."""
        merged = {**self.defaults, **params}
        self.check(merged)
        return merged


TECHNIQUES: Registry[Technique] = Registry("technique")


def technique(
    name: str,
    stage: str,
    *,
    defaults: dict[str, Any],
    label: Callable[[dict[str, Any]], str],
    check: Callable[[dict[str, Any]], None] = lambda params: None,
    precision: str | None = None,
    formats: tuple[str, ...] = BUILD_FORMATS,
    then_quantize: str | None = None,
    files: tuple[str, ...] = (),
    from_train: tuple[str, ...] = (),
    param_formats: dict[str, tuple[str, ...]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as technique `name`; `files` names the parameters whose
    value is a path to a local file, `from_train` those whose None means the model's training
    setting, `param_formats` those that apply to some formats only (see `Technique`)."""

    unknown = [key for key in (*files, *from_train, *(param_formats or {})) if key not in defaults]
    if unknown:
        raise ValueError(f"technique {name}: {unknown[0]!r} is not one of its parameters")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        TECHNIQUES.add(
            name,
            Technique(name, stage, fn, dict(defaults), label, check, precision, formats,
                      then_quantize, (fn.__doc__ or "").strip().splitlines()[0]
                      if fn.__doc__ else "", tuple(files), tuple(from_train),
                      dict(param_formats or {})),
        )
        return fn

    return deco


def load_all() -> Registry[Technique]:
    for module in _IMPLEMENTATIONS:
        importlib.import_module(module)
    return TECHNIQUES


# Checks shared by the implementations (and by training and dataset settings); each raises
# ParamError naming the parameter.


def in_range(params: dict[str, Any], key: str, low: float, high: float, *,
             low_open: bool = False, high_open: bool = False) -> None:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ParamError(f"{key} must be a number, got {value!r}", key)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ParamError(f"{key}={value} is out of range {lo}{low}, {high}{hi}", key)


def positive_int(params: dict[str, Any], key: str, *, allow_zero: bool = False) -> None:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        need = "a non-negative" if allow_zero else "a positive"
        raise ParamError(f"{key} must be {need} integer, got {value!r}", key)


def one_of(params: dict[str, Any], key: str, choices: tuple[str, ...]) -> None:
    if params.get(key) not in choices:
        raise ParamError(f"{key}={params.get(key)!r} is not one of {', '.join(choices)}", key)


def flag(params: dict[str, Any], key: str) -> None:
    if not isinstance(params.get(key), bool):
        raise ParamError(f"{key} must be true or false, got {params.get(key)!r}", key)


def text(params: dict[str, Any], key: str) -> None:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise ParamError(f"{key} must be a non-empty string, got {value!r}", key)


def learning_rate(params: dict[str, Any], key: str = "lr") -> None:
    in_range(params, key, 0.0, 1.0, low_open=True)


def unless_none(check: Callable[..., None], params: dict[str, Any], key: str,
                *args: Any, **kwargs: Any) -> None:
    """`check` where the parameter is given; None means its default behaviour."""
    if params.get(key) is not None:
        check(params, key, *args, **kwargs)


def param_path(value: str) -> Path:
    """A file a parameter names: `~` and `$VARS` expanded, relative to the working folder (as a
    model's `weights`)."""
    return Path(os.path.expandvars(os.path.expanduser(value)))


def pct(ratio: float) -> str:
    return f"{round(100 * ratio):d}"
