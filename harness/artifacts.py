"""What a built model is: the file, its manifest, and the data to check it on.

`edgebench build` writes each artifact as a model file plus `<file>.manifest.json` beside it;
`edgebench bench` reads them back as `Artifact` records. This is the contract between the two
halves (compress/zoo on one side, runner/store on the other): fields may grow, these keep their
meaning.

Manifest (JSON)::

    {"name": "digits_cnn-int8_static", "format": "onnx", "path": "digits_cnn-int8_static.onnx",
     "sha256": "...", "size_bytes": 1234, "base_model": "digits_cnn",
     "baseline": "digits_cnn",            # fp32 parent artifact of the same format; null for itself
     "technique": "int8_static",          # short label of the lineage, "fp32" for a baseline
     "precision": "int8",
     "lineage": [{"technique": "quantize_static", "params": {...}}, ...],
     "params": 12345, "macs": 67890, "input_shape": [1, 1, 32, 32], "input_dtype": "float32",
     "host_accuracy": {"top1": 0.97, "top5": 1.0, "n": 360} | null,
     "parity": {"top1_agreement": 1.0, "max_abs_diff": 1e-5} | null,
     "host_run": {"isa": "x86 sse4_2 avx fma avx2 f16c", "cpu_model": "...",
                  "machine": "x86_64", "runtime": "onnxruntime", "runtime_version": "1.22.0",
                  "threads": 2} | null,  # where host_accuracy and parity were computed
     "dataset": {"name": "digits", "inputs": "data/digits/inputs.npy",
                 "labels": "data/digits/labels.npy",
                 "reference": "data/digits/digits_cnn.reference.npy",
                 "preprocessing": {...},
                 "sha256": {"inputs": "...", "labels": "...", "reference": "..."},
                 "source_files": {"sha256": "...", "files": 7390, "bytes": 791918971,
                                  "folders": ["/data/pets/oxford-iiit-pet/images", ...],
                                  "method": "sha256 of the name, size and content of ..."}
                                 | null} | null,   # source_files: null for digits (sklearn's)
     "seed": 0,                           # the suite's seed
     "training": {"epochs": 10, "lr": 0.003, "batch_size": 64, "weight_decay": 0.0,
                  "optimizer": "adam", "schedule": "cosine",
                  "weights_sha256": null},  # the fp32 baseline's ({"epochs": 0, ...}: untrained)
     "built_with": {"edgebench": "0.1.0", "code_sha256": "...",
                    "libraries": {"torch": "2.14.1", "onnxruntime": "...", ...}},
     "onnx": {"opset": 18, "ir_version": 8} | null}  # an ONNX file's; null for other formats

Paths inside a manifest are relative to the manifest's folder. A lineage entry's `params` are
the values used (a distillation's `lr` taken from the model's `train:`), and only those with an
effect on the file's format. `host_accuracy` and `parity` are this host's figures: `host_run`
names its CPU's instruction set (`isa`, as a device fingerprint names it: int8 kernels, and so
top-1, differ between AVX2, VNNI and Arm), the runtime, its version and the threads.
`dataset.source_files` sums up the local copy the tensors were made from (every file the loader
may read; see `harness.zoo.datasets.source_fingerprint`); it is null for a dataset without files
of its own (digits ships with scikit-learn, whose version is in `built_with`). `seed`,
`training`, `built_with`, `host_run` and `dataset.source_files` are null in manifests written
before edgebench recorded them. `onnx` holds what an onnxruntime checks before it loads a file,
its ai.onnx opset (the suite's `onnx: {opset: N}`) and IR version (the lowest that opset needs):
onnxruntime 1.12 and 1.13 take opset 17 at most, and IR 8; null in manifests before it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, EdgebenchError

# The model formats edgebench knows and the file suffix each is stored under: the one list. (The
# agent's runtimes declare the formats they load themselves: the agent ships without harness.)
# (No `.engine`: TensorRT runs as ONNX Runtime's execution provider, building its engine from the
# ONNX file on the device and caching it there.)
FORMAT_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "torch": ".pt2"}
FORMATS = tuple(FORMAT_SUFFIX)
FORMAT_BY_SUFFIX = {suffix: fmt for fmt, suffix in FORMAT_SUFFIX.items()}
# What `edgebench build` exports (a suite without `formats` gets DEFAULT_BUILD_FORMATS); the
# other formats are benchmarked from files built elsewhere.
BUILD_FORMATS = ("onnx", "tflite", "torch")
DEFAULT_BUILD_FORMATS = ("onnx", "tflite")
MANIFEST_SUFFIX = ".manifest.json"

# Names from a suite, profile or manifest become parts of paths (`<build>/<model>.onnx`,
# `<cache_dir>/<sha256>`): one safe component each, never `..`, a separator or a hidden file.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
SAFE_NAME_RULE = "letters, digits, '_', '-' and '.', not starting with '.'"


def is_safe_name(value: object) -> bool:
    return isinstance(value, str) and _SAFE_NAME.fullmatch(value) is not None


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=256)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: Path) -> str:
    """sha256 of a file, hashed again only when its size or modification time changed."""
    st = Path(path).stat()
    return _sha256_of(Path(path), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class DatasetFiles:
    """Pre-processed tensors, exactly what the device is fed, with labels and fp32 reference."""

    name: str
    inputs: Path
    labels: Path
    reference: Path | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # sha256 of each part, as written into the manifest, so a run does not hash them again
    sha256: dict[str, str] = field(default_factory=dict)
    # the dataset's own files the tensors were made from (`source_fingerprint`); None: none
    source_files: dict[str, Any] | None = None

    def hashed(self) -> DatasetFiles:
        """The same files with the sha256 of each part as it is now."""
        return replace(self, sha256={part: file_sha256(p) for part, p in self.parts().items()})

    def parts(self) -> dict[str, Path]:
        found = {"inputs": self.inputs, "labels": self.labels, "reference": self.reference}
        return {part: path for part, path in found.items() if path is not None}


@dataclass(frozen=True)
class Artifact:
    name: str
    path: Path
    format: str
    sha256: str
    size_bytes: int
    technique: str = "fp32"
    precision: str = "fp32"
    base_model: str | None = None
    baseline: str | None = None
    lineage: tuple[dict[str, Any], ...] = ()
    params: int | None = None
    macs: int | None = None
    input_shape: tuple[int, ...] | None = None
    input_dtype: str | None = None
    host_accuracy: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    host_run: dict[str, Any] | None = None  # the CPU (isa), runtime and threads of those two
    dataset: DatasetFiles | None = None
    # what reproducing the artifact takes besides its lineage (None in older manifests)
    seed: int | None = None  # the suite's
    training: dict[str, Any] | None = None  # the fp32 baseline's training
    built_with: dict[str, Any] | None = None  # edgebench and library versions
    onnx: dict[str, int] | None = None  # an ONNX file's opset and IR version

    @property
    def manifest_path(self) -> Path:
        return self.path.with_name(self.path.name + MANIFEST_SUFFIX)


def format_of(path: Path) -> str:
    try:
        return FORMAT_BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise EdgebenchError(
            f"{path}: cannot tell the model format from the suffix {path.suffix!r}; "
            f"known: {', '.join(sorted(FORMAT_BY_SUFFIX))}"
        ) from None


def from_model_file(path: Path) -> Artifact:
    """An artifact for a bare model file (`bench --model FILE`); uses its manifest if present."""
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a model file" if path.is_dir() else "model file not found"
        raise EdgebenchError(f"{path}: {what}")
    manifest = path.with_name(path.name + MANIFEST_SUFFIX)
    if manifest.is_file():
        return load_manifest(manifest)
    return Artifact(
        name=path.stem,
        path=path.resolve(),
        format=format_of(path),
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        base_model=path.stem,
    )


def load_manifest(manifest_path: Path) -> Artifact:
    manifest_path = Path(manifest_path)
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(manifest_path, f"unreadable manifest ({err})") from err
    root = manifest_path.parent
    if not isinstance(data, dict):
        raise ConfigError(manifest_path, "a manifest is a JSON object")
    _check_manifest_names(manifest_path, data)
    try:
        path = (root / data["path"]).resolve()
        dataset = None
        if data.get("dataset"):
            ds = data["dataset"]
            dataset = DatasetFiles(
                name=ds["name"],
                inputs=(root / ds["inputs"]).resolve(),
                labels=(root / ds["labels"]).resolve(),
                reference=(root / ds["reference"]).resolve() if ds.get("reference") else None,
                preprocessing=ds.get("preprocessing") or {},
                sha256=dict(ds.get("sha256") or {}),
                source_files=ds.get("source_files"),
            )
        shape = data.get("input_shape")
        _check_unchanged(manifest_path, path, data["sha256"])
        if dataset is not None:
            for part, part_path in dataset.parts().items():
                if part in dataset.sha256:
                    _check_unchanged(manifest_path, part_path, dataset.sha256[part],
                                     f"dataset.sha256.{part}")
        return Artifact(
            name=data["name"],
            path=path,
            format=data["format"],
            sha256=data["sha256"],
            size_bytes=int(data["size_bytes"]),
            technique=data.get("technique", "fp32"),
            precision=data.get("precision", "fp32"),
            base_model=data.get("base_model"),
            baseline=data.get("baseline"),
            lineage=tuple(data.get("lineage") or ()),
            params=data.get("params"),
            macs=data.get("macs"),
            input_shape=tuple(shape) if shape else None,
            input_dtype=data.get("input_dtype"),
            host_accuracy=data.get("host_accuracy"),
            parity=data.get("parity"),
            host_run=data.get("host_run"),
            dataset=dataset,
            seed=data.get("seed"),
            training=data.get("training"),
            built_with=data.get("built_with"),
            onnx=data.get("onnx"),
        )
    except KeyError as err:
        raise ConfigError(manifest_path, "required field is missing", field=err.args[0]) from err


def _check_unchanged(manifest_path: Path, model: Path, sha256: str, field: str = "sha256"
                     ) -> None:
    """A model replaced after its manifest was written is not what the manifest describes."""
    try:
        newer = model.stat().st_mtime_ns > manifest_path.stat().st_mtime_ns
    except OSError:
        return  # a missing model is reported where it is opened, with its own message
    if newer and (actual := file_sha256(model)) != sha256:
        raise ConfigError(manifest_path, f"{model.name} changed after this manifest was written "
                          f"(sha256 {actual[:12]}..., manifest {sha256[:12]}...); rebuild it or "
                          "remove the manifest", field=field)


def _check_manifest_names(manifest_path: Path, data: dict[str, Any]) -> None:
    """The manifest's names and hashes are used in paths on the host and the device."""
    checks: list[tuple[str, Any, bool]] = [
        ("name", data.get("name"), "name" not in data or is_safe_name(data["name"])),
        ("sha256", data.get("sha256"), "sha256" not in data or is_sha256(data["sha256"])),
    ]
    ds = data.get("dataset")
    if isinstance(ds, dict):
        ds_name = ds.get("name")
        checks.append(("dataset.name", ds_name, "name" not in ds or is_safe_name(ds_name)))
        hashes = ds.get("sha256") or {}
        if not isinstance(hashes, dict):
            raise ConfigError(manifest_path, "must be a mapping of part to sha256",
                              field="dataset.sha256")
        checks += [(f"dataset.sha256.{k}", v, is_sha256(v)) for k, v in hashes.items()]
    elif ds is not None:
        raise ConfigError(manifest_path, "must be an object or null", field="dataset")
    shape = data.get("input_shape")
    if shape is not None and not (
            isinstance(shape, list) and shape
            and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 16
                    for d in shape)):
        raise ConfigError(manifest_path, f"must be a list of sizes such as [1, 3, 224, 224], got "
                          f"{shape!r}", field="input_shape")
    for where, value, ok in checks:
        if not ok:
            rule = "64 lowercase hex digits" if "sha256" in where else SAFE_NAME_RULE
            raise ConfigError(manifest_path, f"{value!r} is not a valid value ({rule})",
                              field=where)


def write_manifest(artifact: Artifact) -> Path:
    """Write `artifact`'s manifest beside its file, paths relative to that folder."""
    root = artifact.path.parent

    def rel(p: Path | None) -> str | None:
        if p is None:
            return None
        try:
            return str(Path(p).resolve().relative_to(root.resolve()))
        except ValueError:
            return str(Path(p).resolve())

    ds = artifact.dataset
    data = {
        "name": artifact.name,
        "format": artifact.format,
        "path": artifact.path.name,
        "sha256": artifact.sha256,
        "size_bytes": artifact.size_bytes,
        "base_model": artifact.base_model,
        "baseline": artifact.baseline,
        "technique": artifact.technique,
        "precision": artifact.precision,
        "lineage": list(artifact.lineage),
        "params": artifact.params,
        "macs": artifact.macs,
        "input_shape": list(artifact.input_shape) if artifact.input_shape else None,
        "input_dtype": artifact.input_dtype,
        "host_accuracy": artifact.host_accuracy,
        "parity": artifact.parity,
        "host_run": artifact.host_run,
        "seed": artifact.seed,
        "training": artifact.training,
        "built_with": artifact.built_with,
        "onnx": artifact.onnx,
        "dataset": None
        if ds is None
        else {
            "name": ds.name,
            "inputs": rel(ds.inputs),
            "labels": rel(ds.labels),
            "reference": rel(ds.reference),
            "preprocessing": ds.preprocessing,
            "sha256": ds.sha256,
            "source_files": ds.source_files,
        },
    }
    artifact.manifest_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return artifact.manifest_path
