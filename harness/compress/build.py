"""`edgebench build SUITE`: every artifact of a suite, compressed, exported, checked, manifested.

For each model of the suite: load its dataset once (pre-processed tensors written to
`<build_dir>/data/<dataset>/`), build or train the fp32 baseline, write the host fp32 reference
logits, then for the baseline and every recipe run the torch steps (a chain, each feeding the
next; shared prefixes computed once), export to each format, apply a final quantize step to the
exported file, run the result in its own runtime on the held-out split, and write the manifest.
A module is exported to a format once: the int8 and fp16 recipes of the baseline quantize the
baseline's own fp32 export (exports are bit-reproducible, so a copy is what a second export
would write); its MACs and PyTorch outputs are also computed once.

Models that share no dataset are independent, so they are built side by side: the first in this
process, the others in spawned worker processes (one per further CPU), whose output comes through
this process's console. The artifacts, the same bytes either way, are listed in suite order. A
worker whose parent dies (even by SIGKILL) exits at once, in the middle of its model.

An artifact is rebuilt only when its build key changes: the key hashes the model, dataset and
recipe configuration, the seed, an ONNX file's opset (the suite's `onnx: {opset: N}`), the content
of the files they name (the model's weights, a step's `Technique.files`, every file a dataset's
loader reads: `source_fingerprint`, whose per-file hashes are kept in
`<build_dir>/.cache/dataset-<name>.files.json` so that a later build reads only the files that
changed) and the source of harness/compress and harness/zoo with the versions of the libraries that
shape the output (which the manifest records too). The key sits in a sidecar `<file>.build.json`. A
failure (an unsupported op, a missing dataset, a rank that shrinks no layer) is recorded against
its suite entry and the rest of the suite still builds; a malformed suite, a value out of range
included, raises ConfigError before anything is built.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import multiprocessing
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from torch import nn

from harness import __version__
from harness.agent import isa, probes, scoring
from harness.agent.runtimes import get_runtime
from harness.artifacts import (
    FORMAT_SUFFIX,
    Artifact,
    DatasetFiles,
    load_manifest,
    sha256_file,
    write_manifest,
)
from harness.compress import export as ex
from harness.compress import quiet_litert_logs
from harness.compress.suite import ModelCfg, RecipeCfg, Step, Suite, load_suite
from harness.compress.techniques import QUANTIZE, TECHNIQUES, ParamError, Technique, load_all
from harness.compress.train import (
    StepContext,
    count_macs,
    count_params,
    fit,
    predict,
    seed_everything,
    training_record,
)
from harness.errors import EdgebenchError
from harness.signals import interrupted, raise_if_interrupted, remembered_interrupts
from harness.zoo.datasets import DATASETS, DataSplit, load_dataset, source_fingerprint
from harness.zoo.models import MODELS, build_model

SIDECAR = ".build.json"
LATENCY_ONLY_SAMPLES = 8  # random inputs used for parity of latency-only models
_LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime", "litert-torch", "ai-edge-quantizer",
              "torch-pruning", "numpy", "scikit-learn")


@dataclass(frozen=True)
class BuildReport:
    artifacts: list[Artifact]  # every artifact that exists after the build (built or reused)
    failures: list[tuple[str, str]]  # (suite entry name, one-line error message)
    built: int  # how many were (re)built this time
    reused: int  # skipped because inputs and recipe unchanged
    summary: str = ""  # "build demo: 23 built, 0 reused, 0 failed in 67.0 s (2 processes)"


def build_suite(suite: Path, build_dir: Path = Path("models/build"), *,
                console: Console | None = None, workers: int | None = None,
                say_summary: bool = True) -> BuildReport:
    """Build every artifact of `suite` into `build_dir`; see the module docstring.

    Models that share nothing written during the build are built side by side, in `workers`
    more processes (default: one per CPU beyond the first, and none when a model, dataset,
    technique or exporter was registered from outside harness, which a fresh process would not
    know); the report lists the artifacts in suite order whichever process built them. Its
    summary line is printed on `console` unless `say_summary` is false (`edgebench build` prints
    it as its result).

    Ctrl-C or SIGTERM ends it with KeyboardInterrupt, even where Python lost the one the signal
    raised (in a gc callback): the build looks between its steps (`remembered_interrupts`).
    """
    with remembered_interrupts():
        return _build_suite(suite, Path(build_dir), console, workers, say_summary)


def _build_suite(suite: Path, build_dir: Path, console: Console | None, workers: int | None,
                 say_summary: bool) -> BuildReport:
    loaded = load_suite(suite)  # ConfigError: nothing is built
    quiet_litert_logs()  # before the first LiteRT import logs anything (workers inherit it)
    console = console or Console(stderr=True)
    start = time.perf_counter()
    builder = _Builder(loaded, build_dir, console)
    try:
        builder.dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file of that name or above it, read-only storage
        raise EdgebenchError(f"{builder.dir}: cannot be the build folder ({err.strerror})"
                             ) from err
    pending = [g for g in _independent_groups(loaded) if any(builder.pending(m) for m in g)]
    extra = _worker_count(workers, len(pending))
    if pending:
        cpu = host_cpu()
        console.print(f"host figures below (top-1, agreement) from this CPU: "
                      f"{cpu['isa'] or 'ISA unknown'}, {ex.HOST_OPTIONS.get('threads')} threads "
                      "(each manifest's host_run)", highlight=False, markup=False)
    by_model: dict[str, BuildReport] = {}
    if extra:
        # the first group here, with this console's live progress; the others in workers
        others = [[m.name for g in pending[1 + i::extra] for m in g] for i in range(extra)]
        with _Workers(loaded, builder.dir, console, others) as done:
            for model in pending[0]:
                by_model[model.name] = builder.build_model(model)
        by_model.update(done)
    for model in loaded.models.values():  # the rest: all reused, or built here one by one
        if model.name not in by_model:
            by_model[model.name] = builder.build_model(model)
    reports = [by_model[name] for name in loaded.models]
    failures = [f for r in reports for f in r.failures]
    built, reused = sum(r.built for r in reports), sum(r.reused for r in reports)
    summary = (f"build {loaded.name}: {built} built, {reused} reused, {len(failures)} failed "
               f"in {time.perf_counter() - start:.1f} s"
               + (f" ({1 + extra} processes)" if extra else ""))
    if say_summary:
        console.print(summary, highlight=False, markup=False)
    return BuildReport([a for r in reports for a in r.artifacts], failures, built, reused,
                       summary)


def _independent_groups(suite: Suite) -> list[list[ModelCfg]]:
    """The suite's models in groups that can be built at the same time: the models of one
    dataset together (they write its files under data/), a latency-only model alone."""
    groups: dict[str, list[ModelCfg]] = {}
    for model in suite.models.values():
        key = f"dataset {model.dataset}" if model.dataset else f"model {model.name}"
        groups.setdefault(key, []).append(model)
    return list(groups.values())


def _worker_count(requested: int | None, groups: int) -> int:
    """How many processes to start besides this one for `groups` groups of models to build."""
    if requested is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        requested = (cpus or os.cpu_count() or 1) - 1
        if not _registries_are_harness_own():
            requested = 0
    return max(0, min(requested, groups - 1))


def _registries_are_harness_own() -> bool:
    """A fresh process knows the same models, datasets, techniques and exporters as this one:
    none was registered or replaced at run time from outside harness (a plugin, a test)."""
    implementations: list[Any] = [MODELS.get(n).build for n in MODELS.names()]
    implementations += [DATASETS.get(n) for n in DATASETS.names()]
    implementations += [TECHNIQUES.get(n).apply for n in TECHNIQUES.names()]
    implementations += list(ex.EXPORTERS.values())
    return all(str(getattr(f, "__module__", "")).startswith("harness.") for f in implementations)


def _summary(artifact: Artifact) -> str:
    """Size, accuracy and top-1 agreement with what the artifact came from, in one line. A
    latency-only model is compared on random inputs, which the line says: there a pruned
    variant of random weights agreeing on 0% is expected, not a broken file."""
    acc, parity = artifact.host_accuracy, artifact.parity or {}
    text = f"{artifact.size_bytes / 1024:.0f} KiB, " + (
        f"top-1 {acc['top1']:.3f}" if acc else "latency only")
    if parity.get("top1_agreement") is not None:
        parent = "PyTorch" if artifact.baseline is None else escape(artifact.baseline)
        text += f", top-1 agreement with {parent} {parity['top1_agreement']:.3f}" + (
            "" if acc else " on random inputs")
    return text + _short_calibration(artifact)


def _short_calibration(artifact: Artifact) -> str:
    """", calibrated on 126 images, not the 1000 of calibration_size" where a quantize step had
    fewer training images than it asked for: it took what there was and said so only in the
    manifest, so that a user who asked for 1000 read their int8 file as calibrated on 1000."""
    for step in artifact.lineage:
        asked = (step.get("params") or {}).get("calibration_size")
        took = (step.get("result") or {}).get("calibration_n")
        if isinstance(asked, int) and isinstance(took, int) and took < asked:
            return (f", calibrated on {took} images, not the {asked} of calibration_size (all "
                    "the training split has)")
    return ""


class _LineQueue(io.TextIOBase):
    """A worker's console output, a line at a time, to the main process's console."""

    def __init__(self, messages: Any) -> None:
        self.messages = messages
        self.partial = ""

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.messages.put(("line", line))
        return len(text)


def _build_in_worker(suite: Suite, build_dir: Path, names: list[str], width: int,
                     messages: Any) -> None:
    """A worker process: build the models `names` one after the other, sending each one's
    report, and every line it prints, to the main process."""
    _exit_with_parent()
    try:
        with remembered_interrupts():
            _build_models(suite, build_dir, names, width, messages)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the main one reports
        pass


def _build_models(suite: Suite, build_dir: Path, names: list[str], width: int,
                  messages: Any) -> None:
    # not a terminal: progress bars print once when done, with no cursor movements
    console = Console(file=cast(IO[str], _LineQueue(messages)), width=width,
                      force_terminal=False, soft_wrap=True)
    builder = _Builder(suite, build_dir, console)
    for name in names:
        messages.put(("done", name, builder.build_model(suite.models[name])))


PARENT_GONE_EXIT = 75  # a worker's status when it stopped because its parent had died
WORKER_GRACE_S = 10.0  # how long a stopped build waits for a worker to end by itself


def _exit_with_parent() -> None:
    """End this worker the moment its parent dies, even by SIGKILL (which runs none of the
    parent's clean-up): nobody is left to take its models, and it would go on training and
    writing into the build folder for minutes. The parent holds the write end of a pipe whose
    read end is this process's `parent_process().sentinel`; the parent's death closes it."""
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(PARENT_GONE_EXIT)  # now, not after the model under way

    threading.Thread(target=watch, daemon=True, name="edgebench-build-parent").start()


class _Workers:
    """Worker processes building groups of models while the main process builds its own:
    `with _Workers(...) as done:` fills `done` (model name -> report) by the end of the block.

    Spawned, not forked: a fork of a process whose torch or JAX threads are running can hang.
    A worker that dies leaves its unbuilt models as failures, never as silent gaps.
    """

    def __init__(self, suite: Suite, build_dir: Path, console: Console,
                 assignments: list[list[str]]) -> None:
        self.console = console
        context = multiprocessing.get_context("spawn")
        self.messages = context.Queue()
        self.assignments = assignments
        self.processes = [
            context.Process(target=_build_in_worker, daemon=True, name=f"edgebench-build-{i}",
                            args=(suite, build_dir, names, console.width, self.messages))
            for i, names in enumerate(assignments)]
        self.done: dict[str, BuildReport] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        while (message := self.messages.get()) is not None:
            if message[0] == "line":
                self.console.print(message[1], markup=False, highlight=False, soft_wrap=True)
            else:
                self.done[message[1]] = message[2]

    def __enter__(self) -> dict[str, BuildReport]:
        for process in self.processes:
            process.start()
        self.reader.start()
        return self.done

    def __exit__(self, kind: object, *rest: object) -> None:
        # Stopped (Ctrl-C, SIGTERM, an error here): SIGTERM ends a worker as Ctrl-C does, its
        # clean-up run (a worker killed outright left its semaphores to Python's resource
        # tracker, which warned of them), and what it had not built is no failure.
        stopping = kind is not None or interrupted()
        for process in self.processes:
            if stopping:
                process.terminate()
        for process in self.processes:
            process.join(WORKER_GRACE_S if stopping else None)
            if process.is_alive():  # in native code that does not look at signals
                process.kill()
                process.join()
        self.messages.put(None)
        self.reader.join()
        self.messages.close()
        if stopping:
            return
        for process, names in zip(self.processes, self.assignments, strict=True):
            for name in names:
                if name not in self.done:
                    message = (f"the build process for {name} ended with status "
                               f"{process.exitcode} before it was built")
                    self.console.print(f"[red]failed[/] {escape(name)}: {escape(message)}")
                    self.done[name] = BuildReport([], [(name, message)], 0, 0)


def _write_whole(path: Path, write: Callable[[Path], None]) -> None:
    """`write` the file under a temporary name beside `path`, renamed when complete: the
    training cache and the dataset tensors are read back by later builds, and a build
    interrupted while writing one left a file that failed every later build of its model."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # np.save wants the .npy suffix
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def code_version(libraries: dict[str, str | None]) -> str:
    """Hash of the code and the `libraries`' versions that decide what a build produces."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    # host accuracy and parity run the agent's runtimes and scoring: they decide a manifest too
    for folder in ("compress", "zoo", "agent/runtimes", "agent/scoring.py"):
        for src in sorted((root / folder).glob("*.py") if (root / folder).is_dir()
                          else [root / folder]):
            digest.update(src.name.encode())
            digest.update(src.read_bytes())
    for lib, version in libraries.items():
        digest.update(f"{lib}={version or 'absent'}".encode())
    return digest.hexdigest()


def host_cpu() -> dict[str, Any]:
    """This CPU as a device fingerprint names it (the agent's own detector): its instruction set
    picks the int8 kernels, and they change the host's top-1 (AVX2 without VNNI saturates)."""
    cpuinfo = probes.read_text("/proc/cpuinfo")
    return {"isa": isa.kernel_flags(cpuinfo or "", platform.machine())["isa"],
            "cpu_model": probes.cpu_model(cpuinfo), "machine": platform.machine()}


def library_versions() -> dict[str, str | None]:
    """The installed version of each library that shapes a build's output (None: absent)."""
    versions: dict[str, str | None] = {}
    for lib in _LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return versions


def _check_forward(model: nn.Module, cfg: ModelCfg, shape: tuple[int, ...]) -> None:
    """One input through the fresh model before anything trains or exports: an input too small
    for its poolings failed inside torch ("Calculated output size: (256x0x0)"), naming neither
    the model nor the setting to change."""
    where = (f"datasets.{cfg.dataset}.image_size" if cfg.dataset is not None
             else f"models.{cfg.name}.input_size")
    try:
        with torch.no_grad():
            model(torch.zeros(shape))
    except RuntimeError as err:
        first = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise EdgebenchError(f"{cfg.arch} cannot take {shape[2]}x{shape[3]} inputs "
                             f"({where}): {first}") from err


def _one_line(err: BaseException) -> str:
    text = (str(err).strip() or type(err).__name__).splitlines()[0]
    return text if isinstance(err, EdgebenchError | ParamError) else f"{type(err).__name__}: {text}"


@dataclass
class _Plan:
    """One recipe resolved against the registry: torch steps and the final quantize step."""

    torch_steps: list[tuple[Technique, dict[str, Any]]]
    quantize: tuple[Technique, dict[str, Any]] | None
    label: str
    precision: str
    # each torch step's place in the suite ("recipes.kd.steps[0].distill"), for its errors
    torch_at: list[str] = field(default_factory=list)


@dataclass
class _ModelState:
    """Everything built once per model and shared by its artifacts."""

    cfg: ModelCfg
    data: DataSplit | None = None
    dataset_files: DatasetFiles | None = None
    baseline: nn.Module | None = None
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0
    eval_x: np.ndarray | None = None
    torch_reference: np.ndarray | None = None
    chains: dict[str, tuple[nn.Module, list[dict[str, Any]]]] = field(default_factory=dict)
    parent_outputs: dict[str, np.ndarray] = field(default_factory=dict)
    # What one module (named by its chain of torch steps, "" for the baseline) gives every
    # artifact made from it: its fp32 export per format (the int8/fp16 recipes of one module
    # quantize the same fp32 file), its PyTorch outputs, its size and MACs.
    exports: dict[tuple[str, str], bytes] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    error: str | None = None


class _Builder:
    def __init__(self, suite: Suite, build_dir: Path, console: Console) -> None:
        self.suite = suite
        self.dir = build_dir
        self.console = console
        libraries = library_versions()
        self.code = code_version(libraries)
        self.built_with = {"edgebench": __version__, "code_sha256": self.code,
                           "libraries": libraries,
                           **({"plugins": dict(suite.plugins)} if suite.plugins else {})}
        self.artifacts: list[Artifact] = []
        self.failures: list[tuple[str, str]] = []
        self.built = self.reused = 0
        self._data: dict[str, DataSplit | str] = {}
        self._weights_sha: dict[Path, str] = {}  # the files the build reads, hashed once
        self._sources: dict[str, dict[str, Any] | None] = {}  # each dataset's, once
        self._host_runs: dict[str, dict[str, Any]] = {}  # each format's, once
        self._checked: dict[tuple[Path, str], Artifact | None] = {}
        self._said: dict[str, str] = {}  # each failure's message, by the first entry it failed
        load_all()

    # --- driving ---------------------------------------------------------------------------

    def _recipes(self, model: ModelCfg) -> list[RecipeCfg | None]:
        return [None, *(self.suite.recipes[name] for name in model.recipes)]

    def build_model(self, model: ModelCfg) -> BuildReport:
        """Every artifact of one model: its baseline, then its recipes."""
        self.artifacts, self.failures, self.built, self.reused = [], [], 0, 0
        state = _ModelState(model)
        for recipe in self._recipes(model):
            raise_if_interrupted()
            self._entry(state, recipe)
        return BuildReport(self.artifacts, self.failures, self.built, self.reused)

    def pending(self, model: ModelCfg) -> bool:
        """Whether any artifact of `model` is to be built (not reusable)."""
        for recipe in self._recipes(model):
            name = model.name if recipe is None else f"{model.name}-{recipe.name}"
            for fmt in self.suite.formats_for(model, recipe):
                path = self.dir / f"{name}{FORMAT_SUFFIX[fmt]}"
                if self._reusable(path, self._key(model, recipe, fmt)) is None:
                    return True
        return False

    def _entry(self, state: _ModelState, recipe: RecipeCfg | None) -> None:
        model = state.cfg
        name = model.name if recipe is None else f"{model.name}-{recipe.name}"
        formats = self.suite.formats_for(model, recipe)
        if not formats:
            self.failures.append((name, "no format left: the recipe's formats exclude the "
                                        "model's"))
            return
        keys = {fmt: self._key(model, recipe, fmt) for fmt in formats}
        pending = []
        for fmt in formats:
            reused = self._reusable(self.dir / f"{name}{FORMAT_SUFFIX[fmt]}", keys[fmt])
            if reused is not None:
                self.artifacts.append(reused)
                self.reused += 1
            else:
                pending.append(fmt)
        if not pending:
            return
        try:
            plan = self._plan(recipe, pending)
            self._prepare(state)
            chain, module, lineage = self._torch_chain(state, name, plan)
        except Exception as err:  # any failure is this entry's alone
            self._fail(name, pending, err)
            return
        for fmt in pending:
            raise_if_interrupted()
            try:
                artifact = self._export(state, name, recipe, plan, chain, module, lineage, fmt)
            except Exception as err:
                self._fail(f"{name} ({fmt})", [fmt], err, stem=name)
                continue
            (self.dir / f"{name}{FORMAT_SUFFIX[fmt]}{SIDECAR}").write_text(
                json.dumps({"key": keys[fmt], "sha256": artifact.sha256}) + "\n")
            self.artifacts.append(artifact)
            self.built += 1
            self.console.print(f"built {escape(artifact.path.name)}: {_summary(artifact)}")

    def _fail(self, entry: str, formats: list[str], err: BaseException,
              stem: str | None = None) -> None:
        message = _one_line(err)
        self.failures.append((entry, message))
        # a baseline's failure fails each of its recipes for the same reason: said once, the
        # recipes point to it (four times the same 300 characters hid what differed)
        first = self._said.setdefault(message, entry)
        said = message if first == entry else f"as {first}, above"
        self.console.print(f"[red]failed[/] {escape(entry)}: {escape(said)}", soft_wrap=True)
        for fmt in formats:  # a stale artifact must not pass for this recipe's output
            path = self.dir / f"{stem or entry}{FORMAT_SUFFIX[fmt]}"
            for stale in (path, path.with_name(path.name + ".manifest.json"),
                          path.with_name(path.name + SIDECAR)):
                stale.unlink(missing_ok=True)

    # --- keys and reuse --------------------------------------------------------------------

    def _key(self, model: ModelCfg, recipe: RecipeCfg | None, fmt: str) -> str:
        dataset = self.suite.datasets.get(model.dataset) if model.dataset else None
        blob = {
            "code": self.code, "seed": self.suite.seed, "format": fmt,
            # the opset an ONNX file is written in (`onnx: {opset: N}`); no other format's
            **({"onnx_opset": self.suite.onnx_opset} if fmt == "onnx" else {}),
            "model": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(model).items()
                      if k not in ("recipes", "formats")},
            "weights_sha256": self._file_sha256(model.weights),
            "dataset": asdict(dataset) if dataset else None,
            # the images themselves: changed in place, they train and score another model
            "dataset_files_sha256": (self._source(model.dataset) or {}).get("sha256"),
            "steps": [asdict(s) for s in recipe.steps] if recipe else [],
            # a file a step reads (a student's weights) counts by its content, not its name
            "step_files_sha256": [self._step_files(s) for s in recipe.steps] if recipe else [],
            # the suite's own Python (`plugins:`) may build any of its models
            "plugins_sha256": sorted(self.suite.plugins.values()),
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()

    def _step_files(self, step: Step) -> dict[str, str | None]:
        tech = TECHNIQUES.get(step.technique)
        named = tech.file_params({**tech.defaults, **step.params})
        return {key: self._file_sha256(path) for key, path in named.items()}

    def _file_sha256(self, path: Path | None) -> str | None:
        """sha256 of a file the build reads; None for none or a missing one (whose build
        fails, naming it)."""
        if path is None or not path.is_file():
            return None
        if path not in self._weights_sha:
            self._weights_sha[path] = sha256_file(path)
        return self._weights_sha[path]

    def _source(self, dataset: str | None) -> dict[str, Any] | None:
        """The fingerprint of the files `dataset` reads, taken once per build; None without a
        dataset or for one without files of its own."""
        if dataset is None:
            return None
        if dataset not in self._sources:
            cfg = self.suite.datasets[dataset]
            cache = self.dir / ".cache" / f"dataset-{dataset}.files.json"
            self._sources[dataset] = source_fingerprint(cfg.type, cfg.params, cache)
        return self._sources[dataset]

    def _reusable(self, path: Path, key: str) -> Artifact | None:
        """The artifact at `path` if it was built with `key` and is intact (checked once)."""
        if (path, key) not in self._checked:
            self._checked[(path, key)] = self._check_reusable(path, key)
        return self._checked[(path, key)]

    def _check_reusable(self, path: Path, key: str) -> Artifact | None:
        sidecar = path.with_name(path.name + SIDECAR)
        manifest = path.with_name(path.name + ".manifest.json")
        if not (path.is_file() and sidecar.is_file() and manifest.is_file()):
            return None
        try:
            recorded = json.loads(sidecar.read_text())
            artifact = load_manifest(manifest)
        except (OSError, ValueError, EdgebenchError):
            return None
        if recorded.get("key") != key or sha256_file(path) != artifact.sha256:
            return None
        ds = artifact.dataset
        if ds is not None and not all(p is not None and Path(p).is_file()
                                      for p in (ds.inputs, ds.labels, ds.reference)):
            return None
        return artifact

    # --- per-model preparation -------------------------------------------------------------

    def _dataset(self, name: str) -> DataSplit:
        if name not in self._data:
            cfg = self.suite.datasets[name]
            try:
                self._data[name] = load_dataset(cfg.type, name, cfg.params, self.suite.seed)
            except Exception as err:
                message = _one_line(err)
                self._data[name] = message if name in message else f"dataset {name!r}: {message}"
        value = self._data[name]
        if isinstance(value, str):
            raise EdgebenchError(value)
        return value

    def _prepare(self, state: _ModelState) -> None:
        if state.error:
            raise EdgebenchError(state.error)
        if state.baseline is not None:
            return
        try:
            self._prepare_baseline(state)
        except Exception as err:
            state.error = _one_line(err)
            raise

    def _prepare_baseline(self, state: _ModelState) -> None:
        cfg = state.cfg
        spec = MODELS.get(cfg.arch)
        if cfg.dataset is not None:
            data = self._dataset(cfg.dataset)
            state.data, state.num_classes = data, data.num_classes
            state.input_shape = data.input_shape
            if cfg.num_classes is not None and cfg.num_classes != data.num_classes:
                raise EdgebenchError(f"{cfg.name}: num_classes {cfg.num_classes} but dataset "
                                     f"{cfg.dataset!r} has {data.num_classes}")
        else:
            size = cfg.input_size or spec.input_size
            state.num_classes = cfg.num_classes or 1000
            state.input_shape = (1, 3, size, size)
        seed_everything(self.suite.seed)
        epochs = int(cfg.train.get("epochs", 0))
        classes_from = None  # a classifier nothing trains must come with the weights
        if state.data is not None and not epochs:
            classes_from = (f"dataset {cfg.dataset!r} "
                            f"({state.data.preprocessing.get('source', 'its loader')}) has "
                            f"{state.num_classes} class{'' if state.num_classes == 1 else 'es'}")
        model = build_model(cfg.arch, state.num_classes, state.input_shape[1], cfg.weights,
                            classes_from)
        _check_forward(model, cfg, state.input_shape)
        cache = self.dir / ".cache" / f"{cfg.name}-{self._key(cfg, None, 'torch')[:16]}.pt"
        if epochs and cache.is_file():
            model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
        elif epochs:
            fit(model, self._ctx(state, cfg.name), epochs=epochs, description="train fp32")
            cache.parent.mkdir(parents=True, exist_ok=True)
            _write_whole(cache, lambda tmp: torch.save(model.state_dict(), tmp))
        state.baseline = model.eval()
        if state.data is not None:
            state.eval_x = state.data.x_test
            state.dataset_files = self._write_dataset(state)
        else:
            rng = np.random.default_rng(self.suite.seed)
            state.eval_x = rng.standard_normal(
                (LATENCY_ONLY_SAMPLES, *state.input_shape[1:])).astype(np.float32)
        state.torch_reference = predict(model, state.eval_x)
        if state.dataset_files is not None and state.dataset_files.reference is not None:
            _write_whole(state.dataset_files.reference,
                         functools.partial(np.save, arr=state.torch_reference))

    def _write_dataset(self, state: _ModelState) -> DatasetFiles:
        data = state.data
        assert data is not None
        folder = self.dir / "data" / data.name
        folder.mkdir(parents=True, exist_ok=True)
        inputs, labels = folder / "inputs.npy", folder / "labels.npy"
        for path, array in ((inputs, data.x_test), (labels, data.y_test)):
            if not path.is_file() or not np.array_equal(np.load(path), array):
                _write_whole(path, functools.partial(np.save, arr=array))
        return DatasetFiles(data.name, inputs, labels, folder / f"{state.cfg.name}.reference.npy",
                            dict(data.preprocessing),
                            source_files=self._source(state.cfg.dataset))

    def _ctx(self, state: _ModelState, entry: str) -> StepContext:
        return StepContext(entry=entry, data=state.data, input_shape=state.input_shape,
                           num_classes=state.num_classes, seed=self.suite.seed,
                           train=state.cfg.train, console=self.console)

    # --- recipes ---------------------------------------------------------------------------

    def _plan(self, recipe: RecipeCfg | None, formats: list[str]) -> _Plan:
        if recipe is None:
            return _Plan([], None, "fp32", "fp32")
        torch_steps: list[tuple[Technique, dict[str, Any]]] = []
        torch_at: list[str] = []
        quantize = None
        labels, precision = [], "fp32"
        for i, step in enumerate(recipe.steps):
            tech = TECHNIQUES.get(step.technique)
            try:
                params = tech.resolve(step.params)
            except ParamError as err:
                raise ParamError(f"{step.technique}: {err}") from err
            labels.append(tech.label(params))
            precision = tech.precision or precision
            if tech.stage == QUANTIZE:
                quantize = (tech, params)
            else:
                torch_steps.append((tech, params))
                torch_at.append(f"recipes.{recipe.name}.steps[{i}].{step.technique}")
                if tech.then_quantize:
                    follow = TECHNIQUES.get(tech.then_quantize)
                    quantize = (follow, {k: v for k, v in params.items()
                                         if k in follow.defaults})
        if quantize is not None:
            unsupported = [f for f in formats if f not in quantize[0].formats]
            if unsupported:
                raise ParamError(f"{quantize[0].name} supports only "
                                 f"{', '.join(quantize[0].formats)}, not {unsupported[0]}; "
                                 "restrict the recipe's formats")
        return _Plan(torch_steps, quantize, ">".join(labels), precision, torch_at)

    def _torch_chain(self, state: _ModelState, entry: str, plan: _Plan
                     ) -> tuple[str, nn.Module, list[dict[str, Any]]]:
        """The module the recipe's torch steps make, the key of that chain of steps ("" for
        the baseline) and its lineage."""
        assert state.baseline is not None
        module: nn.Module = state.baseline
        lineage: list[dict[str, Any]] = []
        prefix = ""
        for (tech, params), at in zip(plan.torch_steps, plan.torch_at, strict=True):
            raise_if_interrupted()
            prefix += json.dumps([tech.name, params], sort_keys=True, default=str)
            if prefix in state.chains:
                module, lineage = state.chains[prefix]
                continue
            seed_everything(self.suite.seed)
            ctx = self._ctx(state, entry)
            params = tech.with_train_settings(params, ctx.setting)  # recorded as used
            try:
                out, info = tech.apply(copy.deepcopy(module), params, ctx)
            except ParamError as err:  # named as the suite loader names a field
                if err.param is None:  # about the model, not a field (a rank that shrinks none)
                    raise
                raise ParamError(f"{at}.{err.param} (model {state.cfg.name}): {err}",
                                 err.param) from err
            lineage = [*lineage, {"technique": tech.name, "params": params, "result": info}]
            module = out.eval()
            state.chains[prefix] = (module, lineage)
        return prefix, module, lineage

    def _export_fp32(self, state: _ModelState, chain: str, module: nn.Module, fmt: str,
                     path: Path) -> None:
        """Export `module` to `path`, or copy the export of the same module made for an
        earlier artifact (exports are deterministic: the bytes are the same)."""
        done = state.exports.get((chain, fmt))
        if done is not None:
            path.write_bytes(done)
            return
        if fmt == "onnx":
            ex.EXPORTERS[fmt](module, state.input_shape, path, opset=self.suite.onnx_opset)
        else:
            ex.EXPORTERS[fmt](module, state.input_shape, path)
        state.exports[(chain, fmt)] = path.read_bytes()

    def _outputs(self, state: _ModelState, chain: str, module: nn.Module) -> np.ndarray:
        """The PyTorch module's outputs on the evaluation inputs, once per module."""
        assert state.eval_x is not None and state.torch_reference is not None
        if chain == "":
            return state.torch_reference
        if chain not in state.outputs:
            state.outputs[chain] = predict(module, state.eval_x)
        return state.outputs[chain]

    def _sizes(self, state: _ModelState, chain: str, module: nn.Module) -> tuple[int, int]:
        """Parameters and MACs of the module, once per module."""
        if chain not in state.sizes:
            state.sizes[chain] = (count_params(module), count_macs(module, state.input_shape))
        return state.sizes[chain]

    def _export(self, state: _ModelState, name: str, recipe: RecipeCfg | None, plan: _Plan,
                chain: str, module: nn.Module, lineage: list[dict[str, Any]], fmt: str
                ) -> Artifact:
        path = self.dir / f"{name}{FORMAT_SUFFIX[fmt]}"
        lineage = list(lineage)
        if plan.quantize is None:
            self._export_fp32(state, chain, module, fmt, path)
        else:
            tech, params = plan.quantize
            # hidden: no artifact's name starts with '.', so this file is never another's
            fp32 = path.with_name(f".tmp-{os.getpid()}-{name}.fp32{FORMAT_SUFFIX[fmt]}")
            try:
                self._export_fp32(state, chain, module, fmt, fp32)
                info = tech.apply(fp32, path, fmt, params, self._ctx(state, name))
            finally:
                fp32.unlink(missing_ok=True)
            lineage.append({"technique": tech.name, "params": tech.applied(params, fmt),
                            "result": info, "format": fmt})
        assert state.eval_x is not None and state.torch_reference is not None
        outputs = ex.run_exported(path, fmt, state.eval_x)
        if plan.quantize is None:  # an fp32 file: it must match the module it was exported from
            ex.check_export_parity(path, outputs, self._outputs(state, chain, module))
        if recipe is None:
            state.parent_outputs[fmt] = outputs
            parent = state.torch_reference  # export parity: the file against PyTorch
        else:
            parent = self._parent_outputs(state, fmt)
        params_n, macs = self._sizes(state, chain, module)
        artifact = Artifact(
            name=name, path=path.resolve(), format=fmt, sha256=sha256_file(path),
            size_bytes=path.stat().st_size, technique=plan.label, precision=plan.precision,
            base_model=state.cfg.name, baseline=None if recipe is None else state.cfg.name,
            lineage=tuple(lineage), params=params_n, macs=macs, input_shape=state.input_shape,
            input_dtype=ex.input_dtype(path, fmt),
            # the agent's own scoring, against the reference logits the device is sent too
            host_accuracy=(scoring.score(outputs, state.data.y_test, state.torch_reference)
                           if state.data else None),
            parity=scoring.parity(outputs, parent),
            host_run=self._host_run(fmt),
            dataset=state.dataset_files.hashed() if state.dataset_files else None,
            seed=self.suite.seed,
            training={**training_record(state.cfg.train),
                      "weights_sha256": self._file_sha256(state.cfg.weights)},
            built_with=self.built_with,
            onnx=ex.onnx_versions(path) if fmt == "onnx" else None,
        )
        write_manifest(artifact)
        return artifact

    def _host_run(self, fmt: str) -> dict[str, Any]:
        """Where and how the host ran a `fmt` file for its accuracy and parity: this CPU, the
        agent's runtime for the format, its version and the threads it was given."""
        if fmt not in self._host_runs:
            runtime = ex.HOST_RUNTIME[fmt]
            self._host_runs[fmt] = {**host_cpu(), "runtime": runtime,
                                    "runtime_version": get_runtime(runtime).version(),
                                    "threads": ex.HOST_OPTIONS.get("threads")}
        return self._host_runs[fmt]

    def _parent_outputs(self, state: _ModelState, fmt: str) -> np.ndarray:
        """Outputs of the fp32 baseline artifact of this format (its own runtime), or of the
        PyTorch baseline when that artifact could not be built."""
        if fmt not in state.parent_outputs:
            path = self.dir / f"{state.cfg.name}{FORMAT_SUFFIX[fmt]}"
            assert state.eval_x is not None and state.torch_reference is not None
            state.parent_outputs[fmt] = (ex.run_exported(path, fmt, state.eval_x)
                                         if path.is_file() else state.torch_reference)
        return state.parent_outputs[fmt]

