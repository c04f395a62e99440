"""Datasets by name, pre-processed once on the host into the float32 tensors the device is fed.

A dataset loader returns a `DataSplit`: train and test arrays in NCHW float32, already resized and
normalised, plus a record of that pre-processing (it goes into every manifest). The test split is
fixed by the seed and is what accuracy is measured on, on the host and on the device alike.
Nothing is downloaded: Oxford-IIIT Pet, CIFAR-10 and image folders are read from a local copy, and
a missing copy is a clear error naming the path. What a local copy holds is summed up by
`source_fingerprint`, the sha256 of every file the loader may read, which the build key hashes.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.compress.techniques import ParamError, in_range, positive_int, text, unless_none
from harness.errors import EdgebenchError
from harness.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataSplit:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, *self.x_test.shape[1:])


Loader = Callable[..., DataSplit]
DATASETS: Registry[Loader] = Registry("dataset")


def _size_or_none(params: dict[str, Any], key: str) -> None:
    unless_none(positive_int, params, key)


def _fraction(params: dict[str, Any], key: str) -> None:
    in_range(params, key, 0.0, 1.0, low_open=True, high_open=True)


# The settings the loaders below take, by name, each with its check. What a suite may set for a
# dataset is its loader's keyword parameters (`settings_of`); a suite's values are checked by
# this table when it is loaded (`check_settings`). A loader registered from elsewhere with a
# setting not named here gets that one as given.
SETTING_CHECKS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "path": text,
    "image_size": positive_int,
    "resize": _size_or_none,
    "max_train": _size_or_none,
    "max_test": _size_or_none,
    "test_fraction": _fraction,
}


def settings_of(kind: str) -> list[str]:
    """The settings a suite may give dataset type `kind`: its loader's keyword parameters."""
    params = inspect.signature(DATASETS.get(kind)).parameters.values()
    return sorted(p.name for p in params
                  if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("name", "seed"))


def check_settings(kind: str, params: dict[str, Any]) -> None:
    """ParamError naming the setting for one `kind` does not take or a value out of range."""
    known = settings_of(kind)
    for key in params:
        if key not in known:
            raise ParamError(f"unknown field; known: type, {', '.join(known)}", str(key))
        check = SETTING_CHECKS.get(key)
        if check is not None:
            check(params, key)


def image_size_of(kind: str, params: dict[str, Any]) -> int | None:
    """The square side of the images a dataset of type `kind` with settings `params` gives:
    its `image_size`, or the loader's default; None for a loader without that setting."""
    if "image_size" in params:
        return int(params["image_size"])
    param = inspect.signature(DATASETS.get(kind)).parameters.get("image_size")
    return param.default if param is not None and isinstance(param.default, int) else None


# The folders under a dataset's `path` that its loader reads: what `source_fingerprint` hashes.
# A loader registered elsewhere that takes a `path` counts the whole folder; one without (digits:
# scikit-learn's bundled copy, whose version the build key holds) has no files of its own.
# Only these folders, not all of `path`: torchvision's layout lets one folder hold many datasets.
SOURCE_FOLDERS: dict[str, tuple[str, ...]] = {
    "imagefolder": ("",),
    "oxford_pets": ("oxford-iiit-pet/images", "oxford-iiit-pet/annotations"),
    "cifar10": ("cifar-10-batches-py",),
}
SOURCE_METHOD = ("sha256 of the name, size and content of every file under the folders; a file "
                 "is hashed again when its size, mtime, ctime or inode changed")
# A file changed this recently is not cached: a second change within the file system's timestamp
# tick (a few ms; 2 s on FAT) would leave its size and times as they were, and its old hash would
# pass for the new content. It is hashed again at the next build instead.
_RECENT_NS = 2_000_000_000


def source_fingerprint(kind: str, params: dict[str, Any], cache: Path | None = None
                       ) -> dict[str, Any] | None:
    """What the files a dataset of type `kind` reads hold now: `{"sha256", "files", "bytes",
    "folders", "method"}`, or None for a dataset that reads no files of its own or names no
    `path` (its loader says what is wrong). The sha256 covers each file's name relative to
    `path` (a class is its folder's name), size and content. `cache` (a JSON file) keeps each
    file's hash with its size and times, so that a later build reads only the files that
    changed; without it every file is read."""
    if "path" not in settings_of(kind) or not params.get("path"):
        return None
    root = _expand(params["path"])
    folders = SOURCE_FOLDERS.get(kind, ("",))
    known = _read_cache(cache)
    kept: dict[str, list[Any]] = {}
    digest = hashlib.sha256()
    count = total = 0
    now = time.time_ns()
    for name, path in _files_under(root, folders):
        entry = _hashed(path, known.get(name))
        if entry[-1] is not None and now - max(entry[1], entry[2]) > _RECENT_NS:
            kept[name] = entry
        digest.update(f"{name}\0{entry[0]}\0{entry[-1]}\n".encode())
        count, total = count + 1, total + max(entry[0], 0)
    if cache is not None and kept != known:
        _write_cache(cache, kept)
    return {"sha256": digest.hexdigest(), "files": count, "bytes": total,
            "folders": [str(root / f) if f else str(root) for f in folders],
            "method": SOURCE_METHOD}


def _expand(path: str | Path) -> Path:
    return Path(os.path.expandvars(str(path))).expanduser()


def _hidden(name: str) -> bool:
    """A file or folder the system keeps out of sight (`.ipynb_checkpoints`, `.DS_Store`, an
    editor's `.cache`): no class and no image of a dataset, and no reason to rebuild."""
    return name.startswith(".")


def _files_under(root: Path, folders: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(name relative to `root`, path) of every file under `root`'s `folders`, in name order,
    links followed as torchvision's ImageFolder follows them, hidden ones left out as the
    image-folder loader leaves them; a missing folder has none."""
    found = []
    for folder in folders:
        top = root / folder if folder else root
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            for filename in filenames:
                if _hidden(filename):
                    continue
                path = Path(dirpath) / filename
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def _hashed(path: Path, cached: list[Any] | None) -> list[Any]:
    """[size, mtime_ns, ctime_ns, inode, sha256] of `path`, `cached` where it still holds; an
    unreadable file (a broken link) is [-1, 0, 0, 0, None]: the loader reports it."""
    try:
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        if isinstance(cached, list) and len(cached) == 5 and cached[:4] == stamp:
            return cached
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    except OSError:
        return [-1, 0, 0, 0, None]
    return [*stamp, digest.hexdigest()]


def _read_cache(cache: Path | None) -> dict[str, list[Any]]:
    try:
        data = json.loads(cache.read_text()) if cache is not None else {}
    except (OSError, ValueError):  # none yet, or half-written by a killed build: hash again
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _write_cache(cache: Path, files: dict[str, list[Any]]) -> None:
    """Written under another name and renamed: a build killed meanwhile leaves the old one."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".tmp-{os.getpid()}-{cache.name}")
    try:
        tmp.write_text(json.dumps({"files": files}, separators=(",", ":")))
        os.replace(tmp, cache)
    finally:
        tmp.unlink(missing_ok=True)


def load_dataset(kind: str, name: str, params: dict[str, Any], seed: int) -> DataSplit:
    loader = DATASETS.get(kind)
    try:
        return loader(name=name, seed=seed, **params)
    except TypeError as err:
        raise EdgebenchError(f"dataset {name!r} ({kind}): bad parameters: {err}") from err


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < test_fraction < 1.0:
        raise EdgebenchError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


@DATASETS.register("digits")
def digits(
    *, name: str, seed: int, image_size: int = 32, test_fraction: float = 0.2
) -> DataSplit:
    """scikit-learn's bundled 8x8 handwritten digits, up-scaled so that standard conv stacks apply.

    Real data, offline, 1797 images; pixels 0..16 scaled to 0..1, bilinear up-scaling, then
    standardised with the training split's mean and std.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                           align_corners=False)
    x = images.numpy()
    y = bunch.target.astype(np.int64)
    train, test = _split(len(y), test_fraction, seed)
    mean, std = float(x[train].mean()), float(x[train].std())
    x = ((x - mean) / std).astype(np.float32)
    return DataSplit(
        name, x[train], y[train], x[test], y[test], 10,
        {"source": "sklearn.datasets.load_digits", "scale": "x/16", "resize": image_size,
         "interpolation": "bilinear", "mean": round(mean, 6), "std": round(std, 6),
         "test_fraction": test_fraction, "seed": seed, "layout": "NCHW"},
    )


def _require(path: str | Path | None, what: str) -> Path:
    """The dataset folder `path`; EdgebenchError saying where it was looked for. A relative
    one is said whole: `shapes` alone, run from another folder than the user's, read as if
    their folder had gone."""
    if not path:
        raise EdgebenchError(f"{what}: no 'path' given (edgebench never downloads datasets)")
    p = _expand(path)
    if not p.exists():
        where = (f"{p}" if p.is_absolute() else
                 f"{Path.cwd() / p} (a relative path is taken from the folder edgebench runs "
                 "in, not the suite file's)")
        raise EdgebenchError(f"{what}: dataset path {where} does not exist "
                             "(edgebench never downloads; point 'path' at a local copy)")
    return p


def _image_transform(image_size: int, resize: int, mean: tuple, std: tuple) -> Any:
    from torchvision import transforms as T

    return T.Compose([T.Resize(resize), T.CenterCrop(image_size), T.ToTensor(),
                      T.Normalize(mean, std)])


def _take(ds: Any, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(ds))
    if limit is not None and limit < len(ds):
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), limit, replace=False))
    xs, ys = [], []
    for i in idx:
        img, label = ds[int(i)]
        xs.append(np.asarray(img, dtype=np.float32))
        ys.append(int(label))
    if not xs:
        raise EdgebenchError("dataset split is empty")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _preprocessing(source: str, image_size: int, resize: int, mean: tuple, std: tuple,
                   seed: int, **extra: Any) -> dict[str, Any]:
    return {"source": source, "resize": resize, "center_crop": image_size,
            "mean": list(mean), "std": list(std), "seed": seed, "layout": "NCHW", **extra}


@DATASETS.register("imagefolder")
def imagefolder(
    *, name: str, seed: int, path: str | None = None, image_size: int = 224,
    resize: int | None = None, max_train: int | None = None, max_test: int | None = 1000,
    test_fraction: float = 0.2,
) -> DataSplit:
    """An ImageNet-style folder: `path/train/<class>/*.jpg` and `path/val/<class>/*.jpg`, or one
    folder of class sub-folders that is split with `test_fraction`."""
    from torch.utils.data import Subset

    root = _require(path, f"dataset {name!r}")
    resize = resize or int(image_size * 256 / 224)
    tf = _image_transform(image_size, resize, IMAGENET_MEAN, IMAGENET_STD)

    def folder(top: Path) -> Any:
        try:
            return _visible_image_folder(top, tf)
        except FileNotFoundError as err:
            raise EdgebenchError(f"dataset {name!r}: {_no_images(top) or err}") from err

    if (root / "train").is_dir() and (root / "val").is_dir():
        train_ds, test_ds = folder(root / "train"), folder(root / "val")
        classes = train_ds.classes
    else:
        full = folder(root)
        tr, te = _split(len(full), test_fraction, seed)
        train_ds, test_ds = Subset(full, tr.tolist()), Subset(full, te.tolist())
        classes = full.classes
    x_tr, y_tr = _take(train_ds, max_train, seed)
    x_te, y_te = _take(test_ds, max_test, seed)
    return DataSplit(name, x_tr, y_tr, x_te, y_te, len(classes),
                     _preprocessing(f"imagefolder:{root}", image_size, resize, IMAGENET_MEAN,
                                    IMAGENET_STD, seed, classes=len(classes)))


def _class_folders(top: Path) -> list[str]:
    """The class folders of an image folder, in name order: its sub-folders, hidden ones left
    out (a Jupyter `.ipynb_checkpoints` beside the classes was counted as one, and so read as
    a class of the model's)."""
    return sorted(e.name for e in os.scandir(top) if e.is_dir() and not _hidden(e.name))


def _is_image(path: str) -> bool:
    """An image by its extension (torchvision's list), none under a hidden folder and no hidden
    file (a `.thumbnails/` copy of each image would have counted it twice)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return path.lower().endswith(IMG_EXTENSIONS) and not any(
        _hidden(part) for part in Path(path).parts)


def _visible_image_folder(top: Path, transform: Any) -> Any:
    """torchvision's ImageFolder of `top`, its classes and images without hidden ones."""
    from torchvision.datasets import ImageFolder

    class VisibleImageFolder(ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            classes = _class_folders(Path(directory))
            if not classes:
                raise FileNotFoundError(f"no class folder in {directory}")
            return classes, {c: i for i, c in enumerate(classes)}

    # relative to `top`, so that a hidden folder above the dataset does not hide it all
    return VisibleImageFolder(str(top), transform, is_valid_file=lambda p: _is_image(
        os.path.relpath(p, top)))


def _no_images(top: Path) -> str:
    """Why the image folder found nothing under `top`, said with the folders: torchvision's
    "Found no valid file for the classes star" named neither where nor what a valid file is."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        classes = _class_folders(top)
    except FileNotFoundError:
        classes = []
    if not classes:
        return (f"{top} has no class sub-folders: put each class's images in a folder of "
                "its own, named after the class")
    empty = [c for c in classes
             if not any(_is_image(os.path.join(os.path.relpath(d, top), f))
                        for d, _, files in os.walk(top / c, followlinks=True) for f in files)]
    if not empty:
        return ""
    shown = ", ".join(str(top / c) for c in empty[:3]) + (
        f" and {len(empty) - 3} more" if len(empty) > 3 else "")
    folders = "class folders" if len(empty) > 1 else "class folder"
    hold = "hold" if len(empty) > 1 else "holds"
    return (f"{folders} {shown} {hold} no image ({', '.join(IMG_EXTENSIONS)}): every class "
            "folder needs one or more, or remove it")


@DATASETS.register("oxford_pets")
def oxford_pets(
    *, name: str, seed: int, path: str | None = None, image_size: int = 224,
    resize: int | None = None, max_train: int | None = None, max_test: int | None = 1000,
) -> DataSplit:
    """Oxford-IIIT Pet (37 breeds) from a local copy in torchvision's layout
    (`path/oxford-iiit-pet/images`, `.../annotations`): trainval for training, test for accuracy."""
    from torchvision.datasets import OxfordIIITPet

    root = _require(path, f"dataset {name!r}")
    if not (root / "oxford-iiit-pet" / "images").is_dir():
        raise EdgebenchError(f"dataset {name!r}: {root} has no oxford-iiit-pet/images folder "
                             "(expected torchvision's OxfordIIITPet layout; nothing is downloaded)")
    resize = resize or int(image_size * 256 / 224)
    tf = _image_transform(image_size, resize, IMAGENET_MEAN, IMAGENET_STD)
    train_ds = OxfordIIITPet(str(root), split="trainval", transform=tf, download=False)
    test_ds = OxfordIIITPet(str(root), split="test", transform=tf, download=False)
    x_tr, y_tr = _take(train_ds, max_train, seed)
    x_te, y_te = _take(test_ds, max_test, seed)
    return DataSplit(name, x_tr, y_tr, x_te, y_te, 37,
                     _preprocessing(f"oxford_pets:{root}", image_size, resize, IMAGENET_MEAN,
                                    IMAGENET_STD, seed))


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@DATASETS.register("cifar10")
def cifar10(
    *, name: str, seed: int, path: str | None = None, image_size: int = 32,
    max_train: int | None = None, max_test: int | None = 2000,
) -> DataSplit:
    """CIFAR-10 from a local copy of the python batches (`path/cifar-10-batches-py`)."""
    from torchvision.datasets import CIFAR10

    root = _require(path, f"dataset {name!r}")
    if not (root / "cifar-10-batches-py").is_dir():
        raise EdgebenchError(f"dataset {name!r}: {root} has no cifar-10-batches-py folder "
                             "(nothing is downloaded)")
    tf = _image_transform(image_size, image_size, CIFAR_MEAN, CIFAR_STD)
    train = CIFAR10(str(root), train=True, transform=tf, download=False)
    test = CIFAR10(str(root), train=False, transform=tf, download=False)
    x_tr, y_tr = _take(train, max_train, seed)
    x_te, y_te = _take(test, max_test, seed)
    return DataSplit(name, x_tr, y_tr, x_te, y_te, 10,
                     _preprocessing(f"cifar10:{root}", image_size, image_size, CIFAR_MEAN,
                                    CIFAR_STD, seed))
