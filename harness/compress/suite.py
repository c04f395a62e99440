"""Suites: which datasets, base models, recipes and formats `edgebench build` produces.

A suite is a YAML file (see models/demo.yaml)::

    name: demo
    seed: 0
    formats: [onnx, tflite]                 # default for every model (also: torch, a .pt2)
    onnx: {opset: 17}                       # optional: ONNX files' opset (default 18)
    datasets:
      digits: {type: digits, image_size: 32}
    models:
      digits_cnn:
        arch: digits_cnn                    # a zoo model name
        dataset: digits                     # omit for a latency-only model (random weights)
        weights: path/to/state_dict.pt      # optional local file; nothing is downloaded
        train: {epochs: 12, lr: 0.003}      # train the baseline from its weights (or scratch)
        recipes: [int8_static, prune50]
      resnet18: {arch: resnet18, input_size: 224}
    recipes:
      int8_static:
        steps: [{quantize_static: {calibration_size: 128}}]
      prune50:
        steps: [{prune_structured: {ratio: 0.5}}]
        formats: [onnx]                     # optional: only these formats

Every model also gets its fp32 baseline. Everything is checked here, before anything is built:
structure, names (unknown technique, model and dataset names list the known ones) and every value
whose type and range are known: training settings (`train.TRAIN_SETTINGS`), dataset settings (the
loader's parameters, `datasets.SETTING_CHECKS`) and each step's parameters (its technique's
`check`, which the build runs again). A ConfigError names the file and the field
(`recipes.int8.steps[0].quantize_static.calibration_size`); a suite with one bad value builds
nothing. Formats and input sizes too: a recipe is built in the model's formats that every step
can produce (`Technique.formats`), and one that leaves none is refused; a model's input size is
its dataset's, which an arch of one size only (`ModelSpec.fixed_input_size`) must match, a
distillation student's included. So is what would fail at build after other models trained: a
step that trains (`EPOCH_PARAMS` above 0) on a model without a dataset, a `weights` or step file
(`Technique.files`) that is not there, two entries whose artifacts get one name
(`artifact_name`), a recipe listed twice. What only the model shows (a rank that shrinks no
layer) fails its artifact at build. A model with a dataset but neither weights nor training is
warned of (random weights: chance accuracy). Relative paths (`weights`, `student_weights`, a
dataset's `path`) are taken from the working folder, as the build opens them, not from the suite
file's folder; a weights file not found is named by its full path. A dataset's folder is left
to its loader at build: a missing one fails that dataset's entries alone.
`onnx: {opset: N}` sets the ai.onnx opset of every ONNX file (`export.ONNX_OPSETS`, default
18, the exporter's own): 17 for the onnxruntime 1.12 and 1.13 of JetPack 5, which refuse 18. It
keys the ONNX artifacts (not the others) and each ONNX manifest records it with the IR version;
in a suite that builds no ONNX file it is refused.
A suite's `plugins:` are Python files imported before its names are checked, each once per
process: a user's own architectures (`harness.zoo.models.register_model`), whose content keys
the suite's artifacts.
Device profiles live in harness/config.py; this module holds only suites.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from harness import yamlfile
from harness.artifacts import (
    BUILD_FORMATS,
    DEFAULT_BUILD_FORMATS,
    FORMAT_SUFFIX,
    SAFE_NAME_RULE,
    is_safe_name,
    sha256_file,
)
from harness.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class DatasetCfg:
    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    technique: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecipeCfg:
    name: str
    steps: tuple[Step, ...]
    formats: tuple[str, ...] | None = None  # the recipe's own `formats:`, if it gives one
    # the formats every step can produce (a quantize step: its technique's `formats`)
    step_formats: tuple[str, ...] = BUILD_FORMATS


@dataclass(frozen=True)
class ModelCfg:
    name: str
    arch: str
    dataset: str | None = None
    weights: Path | None = None
    num_classes: int | None = None
    input_size: int | None = None
    train: dict[str, Any] = field(default_factory=dict)
    formats: tuple[str, ...] = DEFAULT_BUILD_FORMATS
    recipes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suite:
    path: Path
    name: str
    seed: int
    datasets: dict[str, DatasetCfg]
    models: dict[str, ModelCfg]
    recipes: dict[str, RecipeCfg]
    # Python files the suite imports (`plugins:`), by path, with their content's sha256: the
    # architectures they register build the suite's models, so they key its artifacts too.
    plugins: dict[str, str] = field(default_factory=dict)
    # the ai.onnx opset of its ONNX files (`onnx: {opset: N}`; export.DEFAULT_ONNX_OPSET, which
    # pulls in torch, when not given): old device runtimes refuse 18
    onnx_opset: int = 18

    def formats_for(self, model: ModelCfg, recipe: RecipeCfg | None) -> tuple[str, ...]:
        """The formats an entry is built in: the model's, less those the recipe leaves out by
        its `formats:` or that one of its steps cannot produce."""
        if recipe is None:
            return model.formats
        return tuple(f for f in model.formats if f in recipe.step_formats
                     and (recipe.formats is None or f in recipe.formats))


def _known() -> tuple[list[str], list[str], list[str]]:
    # Imported here: the registries pull in torch, and loading a suite for its names should not
    # need to happen at import time of the CLI.
    from harness.compress.techniques import load_all
    from harness.zoo.datasets import DATASETS
    from harness.zoo.models import MODELS

    return load_all().names(), MODELS.names(), DATASETS.names()


class _Reader:
    """Field access with errors that name the file and the dotted field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(self.path, message, field=where)

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a mapping, got {type(value).__name__}")
        return value

    def keys(self, value: dict[str, Any], where: str, allowed: set[str]) -> None:
        extra = sorted(set(value) - allowed)
        if extra:
            raise self.fail(f"{where}.{extra[0]}" if where else extra[0],
                            f"unknown field; known: {', '.join(sorted(allowed))}")

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"must be a non-empty string, got {value!r}")
        return value

    def entries(self, value: Any, where: str) -> list[tuple[str, Any]]:
        """A mapping whose keys become file names: each key must be a safe path component."""
        items = list(self.mapping(value, where).items())
        for key, _ in items:
            if not is_safe_name(key):
                raise self.fail(f"{where}.{key}", f"name {key!r} is not allowed in file names; "
                                f"use {SAFE_NAME_RULE}")
        return items

    def integer(self, value: Any, where: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def names(self, value: Any, where: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(where, f"must be a list of names, got {value!r}")
        return tuple(value)

    def known(self, name: str, where: str, kind: str, known: list[str]) -> None:
        if name not in known:
            raise self.fail(where, str(UnknownNameError(kind, name, known)))

    def checked(self, where: str, check: Callable[..., Any], *args: Any) -> None:
        """`check(*args)`, which raises ParamError naming its parameter, one below `where`."""
        from harness.compress.techniques import ParamError

        try:
            check(*args)
        except ParamError as err:
            raise self.fail(f"{where}.{err.param}" if err.param else where, str(err)) from None

    def formats(self, value: Any, where: str) -> tuple[str, ...]:
        formats = self.names(value, where)
        for i, fmt in enumerate(formats):
            self.known(fmt, f"{where}[{i}]", "format", list(BUILD_FORMATS))
            if fmt in formats[:i]:
                raise self.fail(f"{where}[{i}]", f"format {fmt!r} is listed twice")
        return formats


def _path(value: str) -> Path:
    """A file a suite names, as the build opens it: `~` and `$VARS` expanded, a relative path
    taken from the working folder (`techniques.param_path` reads a step's files alike)."""
    return Path(os.path.expandvars(os.path.expanduser(value)))


def _check_file(r: _Reader, where: str, path: Path) -> None:
    """A file the build reads must be there before anything is trained: a missing weights file
    failed its model at build, after the suite's other models had trained. The message gives
    the full path looked at: a relative one is taken from the working folder, not the suite's."""
    if path.is_file():
        return
    if not str(path).strip() or str(path) == ".":
        raise r.fail(where, "an empty path; give a file")
    what = "is a folder, not a file" if path.is_dir() else "not found"
    raise r.fail(where, f"{what}: {path.absolute()}" + (
        "" if path.is_absolute() else " (a relative path is taken from the folder edgebench "
        "runs in, not the suite file's)")
        + ("" if where.startswith("plugins") else "; edgebench never downloads"))


def load_suite(path: Path | str) -> Suite:
    """Read and check a suite file; ConfigError (file + field) for anything malformed."""
    path = Path(path)
    try:
        raw = yamlfile.load(path)
    except FileNotFoundError:
        raise ConfigError(path, f"suite file not found (looked for {path.absolute()})") from None
    r = _Reader(path)
    top = r.mapping(raw, "")
    if not top:
        raise ConfigError(path, "empty suite")
    r.keys(top, "", {"name", "seed", "formats", "datasets", "models", "recipes", "description",
                     "plugins", "onnx"})
    plugins = _load_plugins(r, top.get("plugins"))  # before the names they add are looked up
    techniques, model_names, dataset_types = _known()
    from harness.compress.train import TRAIN_SETTINGS
    from harness.zoo.datasets import check_settings

    default_formats = r.formats(top.get("formats", list(DEFAULT_BUILD_FORMATS)), "formats")
    seed = r.integer(top.get("seed", 0), "seed")
    onnx_opset = _onnx_opset(r, top.get("onnx"))

    datasets: dict[str, DatasetCfg] = {}
    for name, body in r.entries(top.get("datasets"), "datasets"):
        where = f"datasets.{name}"
        same = [other for other in datasets if other.casefold() == name.casefold()]
        if same:  # its tensors go to <build>/data/<name>/: one folder on macOS and Windows
            raise r.fail(where, f"differs from datasets.{same[0]} in case only, and their files "
                         "would share one folder on a case-insensitive file system; rename one")
        body = dict(r.mapping(body, where))
        kind = r.string(body.pop("type", None), f"{where}.type")
        r.known(kind, f"{where}.type", "dataset", dataset_types)
        r.checked(where, check_settings, kind, body)
        datasets[name] = DatasetCfg(name, kind, body)

    recipes: dict[str, RecipeCfg] = {}
    for name, body in r.entries(top.get("recipes"), "recipes"):
        where = f"recipes.{name}"
        body = r.mapping(body, where)
        r.keys(body, where, {"steps", "formats", "description"})
        steps = _steps(r, body.get("steps"), f"{where}.steps", techniques)
        fmts = r.formats(body["formats"], f"{where}.formats") if "formats" in body else None
        step_formats = _step_formats(r, where, steps, fmts)
        recipes[name] = RecipeCfg(name, steps, fmts, step_formats)

    models: dict[str, ModelCfg] = {}
    warnings: list[str] = []
    models_raw = r.entries(top.get("models"), "models")
    if not models_raw:
        raise r.fail("models", "a suite needs at least one model")
    for name, body in models_raw:
        where = f"models.{name}"
        body = r.mapping(body, where)
        r.keys(body, where, {"arch", "dataset", "weights", "num_classes", "input_size", "train",
                             "formats", "recipes", "description"})
        arch = r.string(body.get("arch", name), f"{where}.arch")
        r.known(arch, f"{where}.arch", "model", model_names)
        dataset = body.get("dataset")
        if dataset is not None:
            r.known(r.string(dataset, f"{where}.dataset"), f"{where}.dataset", "dataset",
                    sorted(datasets))
        train = r.mapping(body.get("train"), f"{where}.train")
        r.keys(train, f"{where}.train", set(TRAIN_SETTINGS))
        for key in train:
            r.checked(f"{where}.train", TRAIN_SETTINGS[key], train, key)
        if train and dataset is None:
            raise r.fail(f"{where}.train", "training needs a dataset; set models."
                         f"{name}.dataset")
        input_size = r.integer(body["input_size"], f"{where}.input_size", 1) \
            if "input_size" in body else None
        _check_input_size(r, name, arch, input_size,
                          datasets[dataset] if dataset is not None else None)
        formats = r.formats(body["formats"], f"{where}.formats") if "formats" in body \
            else default_formats
        recipe_names = r.names(body.get("recipes", []), f"{where}.recipes")
        for i, recipe in enumerate(recipe_names):
            r.known(recipe, f"{where}.recipes[{i}]", "recipe", sorted(recipes))
            if recipe in recipe_names[:i]:
                # one file built twice, and two measurements of one name in a bench
                raise r.fail(f"{where}.recipes[{i}]", f"recipe {recipe} is listed twice (also "
                             f"{where}.recipes[{recipe_names.index(recipe)}])")
            only = recipes[recipe].formats
            if only is not None and not set(only) & set(formats):
                raise r.fail(f"{where}.recipes[{i}]",
                             f"recipe {recipe} is built only as {', '.join(only)}, and this "
                             f"model only as {', '.join(formats)}: nothing would be built")
            for j, step in enumerate(recipes[recipe].steps):
                can = _formats_of(step.technique)
                if not set(can) & set(formats):
                    raise r.fail(f"{where}.recipes[{i}]",
                                 f"recipe {recipe}: {step.technique} (steps[{j}]) produces only "
                                 f"{', '.join(can)}, and this model is built only as "
                                 f"{', '.join(formats)}: nothing would be built")
            if not set(recipes[recipe].step_formats) & set(formats):
                raise r.fail(f"{where}.recipes[{i}]",
                             f"recipe {recipe}'s steps produce together only "
                             f"{', '.join(recipes[recipe].step_formats)}, and this model is "
                             f"built only as {', '.join(formats)}: nothing would be built")
            if dataset is None:
                _check_no_training(r, name, i, recipes[recipe])
            _check_students(r, name, i, recipes[recipe], arch, input_size,
                            datasets[dataset] if dataset is not None else None)
        weights = _path(r.string(body["weights"], f"{where}.weights")) \
            if body.get("weights") else None
        if weights is not None:
            _check_file(r, f"{where}.weights", weights)
        elif dataset is not None and not train.get("epochs"):
            # Not refused: a quick test of the pipeline may want it. But its accuracy on the
            # dataset is chance, which in a report reads as a broken model or runtime.
            warnings.append(f"edgebench: warning: {path}: {where}: dataset {dataset} but "
                            "neither weights nor train.epochs, so its weights are random and its "
                            "accuracy chance; give it weights or train: {epochs: N}, or drop "
                            "dataset for a latency-only model")
        models[name] = ModelCfg(
            name=name, arch=arch, dataset=dataset, weights=weights,
            num_classes=r.integer(body["num_classes"], f"{where}.num_classes", 1)
            if "num_classes" in body else None,
            input_size=input_size,
            train=dict(train),
            formats=formats,
            recipes=recipe_names,
        )
    suite = Suite(path, str(top.get("name") or path.stem), seed, datasets, models, recipes,
                  plugins, onnx_opset)
    _check_artifact_names(r, suite)
    if "onnx" in top:
        _check_onnx_built(r, suite)
    for line in warnings:  # once the suite is taken: a refused one's warnings were noise
        print(line, file=sys.stderr)
    return suite


def _onnx_opset(r: _Reader, value: Any) -> int:
    """The suite's `onnx: {opset: N}`: an opset the build can write (`export.ONNX_OPSETS`:
    torch's exporter writes 18, onnx's version converter takes it down to 14)."""
    from harness.compress.export import DEFAULT_ONNX_OPSET, ONNX_OPSETS

    body = r.mapping(value, "onnx")
    r.keys(body, "onnx", {"opset"})
    opset = body.get("opset", DEFAULT_ONNX_OPSET)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in ONNX_OPSETS:
        raise r.fail("onnx.opset", f"must be an integer from {ONNX_OPSETS.start} to "
                     f"{ONNX_OPSETS.stop - 1}, got {opset!r} (17 for the onnxruntime 1.12 and "
                     "1.13 of JetPack 5)")
    return opset


# The plugins imported by this process, by resolved path: (content sha256, module). A file is
# imported once; its registrations would otherwise collide with its own earlier ones.
_PLUGINS: dict[Path, tuple[str, ModuleType]] = {}


def _load_plugins(r: _Reader, value: Any) -> dict[str, str]:
    """Import each Python file `plugins:` lists, for the architectures (or datasets, techniques)
    it registers (`harness.zoo.models.register_model`); their path and content's sha256."""
    found: dict[str, str] = {}
    for i, text in enumerate(r.names(value if value is not None else [], "plugins")):
        where = f"plugins[{i}]"
        path = _path(text)
        _check_file(r, where, path)
        if str(path) in found or any(Path(p).resolve() == path.resolve() for p in found):
            raise r.fail(where, f"{path} is listed twice")
        if path.suffix != ".py":
            raise r.fail(where, f"{path} is not a Python file (.py)")
        sha = sha256_file(path)
        resolved = path.resolve()
        if resolved in _PLUGINS:
            if _PLUGINS[resolved][0] != sha:
                raise r.fail(where, f"{path} changed since this process imported it; run the "
                             "command again")
        else:
            name = f"edgebench_plugin_{resolved.stem}_{sha[:12]}"
            spec = importlib.util.spec_from_file_location(name, resolved)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses and pickling look a module up by name
            try:
                spec.loader.exec_module(module)
            except Exception as err:  # the user's code: any error, said in one line
                del sys.modules[name]
                first = (str(err).strip() or type(err).__name__).splitlines()[0]
                raise r.fail(where, f"importing {path} failed: {type(err).__name__}: "
                             f"{first}") from err
            _PLUGINS[resolved] = (sha, module)
        found[str(path)] = sha
    return found


def artifact_name(model: str, recipe: str | None) -> str:
    """The name of a suite entry's artifacts: `<model>` for the fp32 baseline, `<model>-<recipe>`
    for a recipe; build.py writes each to `<name><format suffix>` in the build folder, and results
    and reports tell artifacts apart by this name."""
    return model if recipe is None else f"{model}-{recipe}"


def _check_artifact_names(r: _Reader, suite: Suite) -> None:
    """Two entries whose artifacts get one name are refused, naming both: a model name may hold
    `-`, so model `m-r` and model `m` with recipe `r` were both written to `m-r.onnx`, the last
    one built measured under both labels. Names that differ in case only are refused too: on the
    case-insensitive file systems of macOS and Windows they are one file."""
    seen: dict[str, tuple[str, str, str, tuple[str, ...]]] = {}
    for model in suite.models.values():
        entries: list[tuple[str | None, str, str]] = [
            (None, f"models.{model.name}", f"model {model.name}'s fp32 baseline")]
        entries += [(recipe, f"models.{model.name}.recipes[{i}]",
                     f"model {model.name} with recipe {recipe}")
                    for i, recipe in enumerate(model.recipes)]
        for recipe, where, what in entries:
            name = artifact_name(model.name, recipe)
            formats = suite.formats_for(model, None if recipe is None
                                        else suite.recipes[recipe])
            first = seen.get(name.casefold())
            if first is None:
                seen[name.casefold()] = (name, where, what, formats)
                continue
            other, other_where, other_what, other_formats = first
            same = [f"{name}{FORMAT_SUFFIX[f]}" for f in formats if f in other_formats]
            raise r.fail(where, f"{what} makes artifacts named {name}, as does {other_what} "
                         f"({other_where})" + (f" named {other}, one file on a case-insensitive "
                                               "file system" if other != name else "")
                         + (f": both would be written to {', '.join(same)}" if same else "")
                         + "; rename the model or the recipe")


def _check_onnx_built(r: _Reader, suite: Suite) -> None:
    """`onnx:` in a suite that builds no ONNX file is refused: its opset would key nothing, and
    a user who set it for a board's old onnxruntime would find out only on the board."""
    built = {fmt for model in suite.models.values()
             for recipe in (None, *model.recipes)
             for fmt in suite.formats_for(model, None if recipe is None
                                          else suite.recipes[recipe])}
    if "onnx" not in built:
        raise r.fail("onnx", "sets the opset of the suite's ONNX files, and it builds none (only "
                     f"{', '.join(sorted(built))}); add onnx to formats, or drop onnx")


def _check_input_size(r: _Reader, model: str, arch: str, input_size: int | None,
                      dataset: DatasetCfg | None) -> None:
    """A model's input side is its dataset's `image_size` when it has one (its `input_size`
    was silently ignored), else its `input_size` or its arch's; an arch that takes one size
    only (`ModelSpec.fixed_input_size`) is refused any other, naming the field that sets it."""
    from harness.zoo.datasets import image_size_of
    from harness.zoo.models import MODELS

    spec = MODELS.get(arch)
    side = image_size_of(dataset.type, dataset.params) if dataset is not None else None
    if dataset is not None and input_size is not None and input_size != side:
        raise r.fail(f"models.{model}.input_size",
                     f"{input_size}, but its dataset gives {side}x{side} images "
                     f"(datasets.{dataset.name}.image_size"
                     + ("" if "image_size" in dataset.params else ", the default")
                     + "); a model with a dataset takes the dataset's size: drop input_size or "
                     "make the two agree")
    if not spec.fixed_input_size:
        return
    if dataset is not None and side is not None and side != spec.input_size:
        raise r.fail(f"datasets.{dataset.name}.image_size",
                     f"{side}" + ("" if "image_size" in dataset.params else " (the default)")
                     + f", but model {model} ({arch}) takes only {spec.input_size}x"
                     f"{spec.input_size} inputs")
    if dataset is None and input_size is not None and input_size != spec.input_size:
        raise r.fail(f"models.{model}.input_size",
                     f"{input_size}, but {arch} takes only {spec.input_size}x{spec.input_size} "
                     "inputs")


# A step's parameters that count the epochs it trains for (`fit`'s `epochs`): above 0 the step
# needs the model's dataset (`StepContext.require_data`), which a latency-only model lacks.
EPOCH_PARAMS = ("epochs", "finetune_epochs")


def _check_no_training(r: _Reader, model: str, index: int, recipe: RecipeCfg) -> None:
    """A recipe of a model without a dataset may not train: the build failed there, after the
    suite's other models had trained. Named by the recipe's field, which sets the epochs."""
    from harness.compress.techniques import TECHNIQUES, ParamError

    for j, step in enumerate(recipe.steps):
        tech = TECHNIQUES.get(step.technique)
        params = tech.resolve(step.params)
        for key in EPOCH_PARAMS:
            epochs = params.get(key)
            if not isinstance(epochs, int) or epochs <= 0:
                continue
            try:  # qat and distill train at least one epoch: 0 is no way out there
                tech.check({**params, key: 0})
                way_out = f"set it to 0 or give models.{model} a dataset"
            except ParamError:
                way_out = f"give models.{model} a dataset or drop the recipe from it"
            raise r.fail(f"recipes.{recipe.name}.steps[{j}].{step.technique}.{key}",
                         f"{epochs}" + ("" if key in step.params else " (the default)")
                         + f": {step.technique} trains, and model {model} "
                         f"(models.{model}.recipes[{index}]) has no dataset to train on; "
                         + way_out)


# A step's parameters that name the zoo arch the step's output is (distillation's student): it
# takes the model's inputs, so an arch of one input size only is checked as the model's is.
STUDENT_PARAMS = ("student",)


def _check_students(r: _Reader, model: str, index: int, recipe: RecipeCfg, arch: str,
                    input_size: int | None, dataset: DatasetCfg | None) -> None:
    """A student arch that takes one input size only (`ModelSpec.fixed_input_size`) is refused
    another: the build failed there with "mat1 and mat2 shapes cannot be multiplied", after the
    teacher had trained. The model's side is its dataset's, else its input_size or its arch's."""
    from harness.compress.techniques import TECHNIQUES
    from harness.zoo.datasets import image_size_of
    from harness.zoo.models import MODELS

    if dataset is not None:
        side = image_size_of(dataset.type, dataset.params)
        source = f"datasets.{dataset.name}.image_size" + (
            "" if "image_size" in dataset.params else ", the default")
    else:
        side = input_size or MODELS.get(arch).input_size
        source = f"models.{model}.input_size" if input_size else f"{arch}'s default"
    for j, step in enumerate(recipe.steps):
        params = TECHNIQUES.get(step.technique).resolve(step.params)
        for key in STUDENT_PARAMS:
            student = params.get(key)
            if not isinstance(student, str) or student not in MODELS:
                continue
            spec = MODELS.get(student)
            if spec.fixed_input_size and side is not None and side != spec.input_size:
                raise r.fail(f"recipes.{recipe.name}.steps[{j}].{step.technique}.{key}",
                             f"{student}" + ("" if key in step.params else " (the default)")
                             + f" takes only {spec.input_size}x{spec.input_size} inputs, and "
                             f"model {model} (models.{model}.recipes[{index}]) gives it "
                             f"{side}x{side} ({source})")


def _formats_of(technique: str) -> tuple[str, ...]:
    """The formats a step of `technique` can produce: its own, and those of the quantize step
    its output goes through at export (QAT: quantize_static)."""
    from harness.compress.techniques import TECHNIQUES

    tech = TECHNIQUES.get(technique)
    then = TECHNIQUES.get(tech.then_quantize).formats if tech.then_quantize else BUILD_FORMATS
    return tuple(f for f in tech.formats if f in then)


def _step_formats(r: _Reader, where: str, steps: tuple[Step, ...],
                  asked: tuple[str, ...] | None) -> tuple[str, ...]:
    """The formats all of a recipe's steps can produce; a format its `formats:` asks for that a
    step cannot produce is refused, naming the step."""
    possible: tuple[str, ...] = BUILD_FORMATS
    for j, step in enumerate(steps):
        can = _formats_of(step.technique)
        for i, fmt in enumerate(asked or ()):
            if fmt not in can:
                raise r.fail(f"{where}.formats[{i}]",
                             f"{step.technique} (steps[{j}]) produces only {', '.join(can)}, "
                             f"not {fmt}")
        possible = tuple(f for f in possible if f in can)
    if not possible:
        raise r.fail(f"{where}.steps", "its steps have no format in common: "
                     + "; ".join(f"{s.technique} produces {', '.join(_formats_of(s.technique))}"
                                 for s in steps))
    return possible


def _steps(r: _Reader, value: Any, where: str, techniques: list[str]) -> tuple[Step, ...]:
    from harness.compress.techniques import QUANTIZE, TECHNIQUES

    if not isinstance(value, list) or not value:
        raise r.fail(where, "must be a non-empty list of steps")
    steps = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        params: dict[str, Any] = {}
        if isinstance(item, str):
            name = item
        elif isinstance(item, dict) and len(item) == 1:
            name, params = next(iter(item.items()))
            params = r.mapping(params, f"{at}.{name}")
        else:
            raise r.fail(at, "a step is a technique name or {technique: {param: value}}")
        r.known(name, at, "technique", techniques)
        tech = TECHNIQUES.get(name)
        r.keys(params, f"{at}.{name}", set(tech.defaults))
        r.checked(f"{at}.{name}", tech.resolve, params)
        for key, file in tech.file_params(tech.resolve(params)).items():
            _check_file(r, f"{at}.{name}.{key}", file)
        if (tech.stage == QUANTIZE or tech.then_quantize) and i != len(value) - 1:
            raise r.fail(at, f"{name} quantizes the exported file, so it must be the last step")
        steps.append(Step(name, dict(params)))
    return tuple(steps)
