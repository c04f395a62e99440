"""Model builders by name: small CNNs for the offline demo and the torchvision classifiers.

Every builder takes the number of classes and the input channel count and returns an `nn.Module`
in eval mode. Weights come only from a local file (`load_weights`): edgebench never downloads, so
a model without a weights file has random weights and is good for latency only, unless the suite
trains it. A weights file is a state_dict, also inside a training checkpoint (`{"model": ...}`,
`{"state_dict": ...}`) or with the `module.` of DistributedDataParallel on every name; RGB weights
fit a grey-scale model (its first conv takes the kernels summed over the colours) and weights for
another number of classes keep all but the classifier, where the suite trains a new one.
"""

from __future__ import annotations

import functools
import math
import pickle
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from harness.errors import EdgebenchError
from harness.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[int, int], nn.Module]  # (num_classes, in_channels) -> module
    input_size: int  # default square input side
    family: str  # "demo" | "torchvision" | "plugin"
    # The only input side the model takes (a fully connected head sized for it); a suite that
    # feeds it another is refused when it is loaded. False: any size (adaptive pooling).
    fixed_input_size: bool = False


MODELS: Registry[ModelSpec] = Registry("model")

Builder = Callable[[int, int], nn.Module]


def register_model(name: str, *, input_size: int, fixed_input_size: bool = False
                   ) -> Callable[[Builder], Builder]:
    """Make `arch: name` known to suites, from a suite's `plugins:` file::

        @register_model("tinynet", input_size=32, fixed_input_size=True)
        def tinynet(num_classes: int, in_channels: int) -> nn.Module:
            return TinyNet(num_classes, in_channels)

    `input_size`: the square input side used without a dataset; `fixed_input_size`: the only
    one the model takes (a head sized for it), which suites are then held to."""
    def register(build: Builder) -> Builder:
        if name in MODELS.names():
            raise ValueError(f"arch {name!r} is already known (built in, or another plugin's); "
                             "register yours under a name of its own")

        @functools.wraps(build)  # keeps the plugin's module: the build knows it is not ours
        def checked(num_classes: int, in_channels: int) -> nn.Module:
            try:
                model = build(num_classes, in_channels)
            except EdgebenchError:
                raise
            except Exception as err:
                raise EdgebenchError(f"arch {name}: its builder {build.__qualname__} failed"
                                     f"{_where_in(build, err)}: {type(err).__name__}: "
                                     f"{_plain(err)}") from err
            if not isinstance(model, nn.Module):
                raise EdgebenchError(f"arch {name}: its builder {build.__qualname__} returned "
                                     f"{type(model).__name__}, not a torch.nn.Module")
            return model

        MODELS.add(name, ModelSpec(name, checked, input_size=input_size, family="plugin",
                                   fixed_input_size=fixed_input_size))
        return build
    return register


class DigitsCNN(nn.Module):
    """Three conv blocks and a two-layer head: small enough to train in seconds on 2 cores, with a
    hidden fully connected layer so that SVD of linear layers has something to factorize. The
    head is sized for 32x32 inputs (three poolings leave 4x4), the only size it takes."""

    INPUT_SIZE = 32

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(in_channels, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * width * (self.INPUT_SIZE // 8) ** 2, 8 * width),
            nn.ReLU(),
            nn.Linear(8 * width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _demo(name: str, width: int) -> None:
    MODELS.add(
        name,
        ModelSpec(name, lambda nc, ch: DigitsCNN(nc, ch, width), input_size=DigitsCNN.INPUT_SIZE,
                  family="demo", fixed_input_size=True),
    )


_demo("digits_cnn", 16)
_demo("digits_cnn_small", 8)  # the distillation student: a quarter of the MACs


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The conv that takes the input's channels: the one `_adapt_stem` replaces and
    `_adapt_stem_weights` fits RGB weights to."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    return None


def _adapt_stem(model: nn.Module, in_channels: int) -> nn.Module:
    first = _first_conv(model)
    if in_channels == 3 or first is None:
        return model
    # Grey-scale inputs: replace the first conv, keeping its geometry.
    name, module = first
    new = nn.Conv2d(
        in_channels,
        module.out_channels,
        module.kernel_size,  # type: ignore[arg-type]
        module.stride,  # type: ignore[arg-type]
        module.padding,  # type: ignore[arg-type]
        bias=module.bias is not None,
    )
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], new)
    return model


TORCHVISION = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "squeezenet1_0",
    "squeezenet1_1",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "mnasnet1_0",
    "regnet_x_400mf",
)


def _where_in(build: Builder, err: BaseException) -> str:
    """" (FILE, line N)": the last line of `build`'s own file that `err` passed through, where
    a plugin's builder or its class failed (a mistyped class name, a bad layer size); "" when
    none did."""
    code = getattr(build, "__code__", None)
    if code is None:
        return ""
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__)
             if frame.filename == code.co_filename]
    return f" ({code.co_filename}, line {lines[-1]})" if lines else ""


def _torchvision(name: str) -> None:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        return _adapt_stem(tvm.get_model(name, weights=None, num_classes=num_classes), in_channels)

    MODELS.add(name, ModelSpec(name, build, input_size=224, family="torchvision"))


for _name in TORCHVISION:
    _torchvision(_name)


def build_model(
    arch: str, num_classes: int, in_channels: int = 3, weights: Path | None = None,
    classes_from: str | None = None,
) -> nn.Module:
    """Build `arch` (a registered name); load `weights` from a local file when given
    (`classes_from`: see `load_weights`)."""
    spec = MODELS.get(arch)
    model = spec.build(num_classes, in_channels)
    if weights is not None:
        load_weights(model, Path(weights), arch, classes_from)
    return model.eval()


def _other_classifier(model: nn.Module, state: dict) -> list[str]:
    """The names of the last layer where `state` has it for another number of classes and
    nothing else differs in shape; [] otherwise."""
    own = model.state_dict()
    last = [name for name, _ in model.named_parameters()][-2:]
    differs = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    return differs if differs and set(differs) <= set(last) else []


def _drop_other_classifier(model: nn.Module, state: dict) -> dict:
    """Fine-tuning from weights trained for another number of classes (ImageNet -> Pets): keep
    everything but the last layer, which stays freshly initialised."""
    differs = _other_classifier(model, state)
    if differs:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k not in differs}
        state.update({k: own[k] for k in differs})
    return state


def _refuse_other_classifier(model: nn.Module, state: dict, path: Path, arch: str,
                             classes_from: str) -> None:
    """EdgebenchError where `_drop_other_classifier` would replace the classifier: weights
    trained on three class folders met a folder of four, and the build measured a random head
    at chance (or, by luck, at 95%) with no word said."""
    differs = _other_classifier(model, state)
    if not differs:
        return  # it fits, or more than the classifier differs: `_mismatch` says what
    key = differs[0]
    raise EdgebenchError(
        f"{arch}: weights file {path} has a classifier for {state[key].shape[0]} classes ({key} "
        f"{list(state[key].shape)}) but {classes_from}; a new classifier would stay untrained "
        "(train.epochs 0) and score chance: give the dataset the classes the weights were "
        "trained on, or set train.epochs to train one")


def _adapt_stem_weights(model: nn.Module, state: dict) -> dict:
    """RGB weights (ImageNet's) for a model whose first conv `_adapt_stem` made for another
    channel count: the RGB kernels summed over the colours for one channel (a grey image given
    to the RGB model as three equal channels computes the same), else repeated and scaled, as
    timm's `adapt_input_conv` does; the pre-trained stem is kept rather than drawn afresh."""
    first = _first_conv(model)
    if first is None:
        return state
    key, own = f"{first[0]}.weight", first[1].weight
    theirs = state.get(key)
    if (not isinstance(theirs, torch.Tensor) or theirs.ndim != 4 or theirs.shape[1] != 3
            or own.shape[1] == 3 or theirs.shape[0] != own.shape[0]
            or theirs.shape[2:] != own.shape[2:]):
        return state
    channels = own.shape[1]
    if channels == 1:
        weight = theirs.sum(dim=1, keepdim=True)
    else:
        weight = theirs.repeat(1, math.ceil(channels / 3), 1, 1)[:, :channels] * (3 / channels)
    return {**state, key: weight.to(theirs.dtype)}


# Where a training script's checkpoint keeps the state_dict: Lightning and timm under
# "state_dict", torchvision's reference scripts under "model", many tutorials "model_state_dict".
CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict")
# What wrapping a model puts before every name: DistributedDataParallel and DataParallel
# ("module."), torch.compile ("_orig_mod.").
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
SHOWN = 3  # names of each kind of mismatch an error lists
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_weights(model: nn.Module, path: Path, arch: str, classes_from: str | None = None
                 ) -> None:
    """Load the state_dict in `path` into `model` (see the module docstring for what fits);
    EdgebenchError naming the file and, where it does not fit, a few names of each kind.

    `classes_from` says where the model's number of classes comes from when nothing trains its
    classifier afterwards ("dataset 'shapes' ... has 4 classes"): weights for another number
    are then refused, since a fresh classifier left untrained scores chance, rather than
    replaced."""
    if not path.is_file():
        raise EdgebenchError(f"{arch}: weights file {path} not found (edgebench never downloads)")
    state = _state_dict_in(_read(path, arch), model, path, arch)
    state = _adapt_stem_weights(model, state)
    if classes_from is not None:
        _refuse_other_classifier(model, state, path, arch, classes_from)
    state = _drop_other_classifier(model, state)
    mismatch = _mismatch(model, state)
    if mismatch:
        raise EdgebenchError(f"{arch}: weights file {path} does not fit the model: {mismatch}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise EdgebenchError(f"{arch}: weights file {path} does not fit the model: "
                             f"{_plain(err)}") from err


def _read(path: Path, arch: str) -> object:
    """What `torch.load` finds in `path`, tensors and containers only (no code is run)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # objects other than tensors, or no checkpoint at all
        raise EdgebenchError(f"{arch}: weights file {path} {_why_refused(path, err)}") from err
    except Exception as err:  # zip and torch errors all mean an unreadable file
        raise EdgebenchError(f"{arch}: cannot read weights file {path}: {_plain(err)}") from err


def _why_refused(path: Path, err: Exception) -> str:
    """Why torch's weights-only loader refused `path`, in a sentence: torch's own message is
    long, about PyTorch 2.6, and has terminal escape codes in it."""
    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        found = get_unsafe_globals_in_checkpoint(path)
    except Exception:
        return "is not a checkpoint written by torch.save (or one in its pre-1.6 format)"
    if any(g.startswith(("torch.nn.modules.", "torchvision.models.")) for g in found):
        return ("holds a pickled model (torch.save(model)), not a state_dict; save "
                "model.state_dict() instead")
    if found:
        return (f"holds Python objects besides tensors ({_listed(found)}), which edgebench does "
                "not unpickle; save model.state_dict() alone")
    return f"cannot be read: {_plain(err)}"


def _state_dict_in(loaded: object, model: nn.Module, path: Path, arch: str
                   ) -> dict[str, torch.Tensor]:
    """The state_dict in what `path` held: itself, or the one a checkpoint keeps under one of
    `CHECKPOINT_KEYS`, with a wrapper's prefix taken off its names."""
    if isinstance(loaded, Mapping) and not _tensors_only(loaded):
        under = [k for k in CHECKPOINT_KEYS if isinstance(loaded.get(k), Mapping)]
        if len(under) != 1:
            what = ("no state_dict under " + " or ".join(repr(k) for k in CHECKPOINT_KEYS)
                    if not under else f"a state_dict under each of {', '.join(map(repr, under))}")
            raise EdgebenchError(f"{arch}: weights file {path} is a dict of "
                                 f"{_listed([str(k) for k in loaded])} with {what}; save the "
                                 "model's state_dict alone")
        loaded = loaded[under[0]]
    if not isinstance(loaded, Mapping) or not _tensors_only(loaded):
        raise EdgebenchError(f"{arch}: weights file {path} holds a {type(loaded).__name__}, not a "
                             "state_dict of names to tensors; save model.state_dict()")
    state = {str(k): v for k, v in loaded.items()}
    own = model.state_dict()
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state) and not any(
                k.startswith(prefix) for k in own):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _tensors_only(mapping: Mapping[Any, Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in mapping.values())


def _mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """What keeps `state` from loading into `model`, a few names of each kind with the counts;
    "" when it fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [f"{k} {list(state[k].shape)} vs {list(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    parts = [f"{len(names)} {what} ({_listed(names)})" for what, names in (
        ("of the model's names missing from the file", missing),
        ("names in the file that the model lacks", unexpected),
        ("of another shape, file vs model", shaped)) if names]
    if len(missing) > len(own) / 2:
        parts.append("most names differ: weights of another architecture?")
    elif shaped:
        parts.append(_other_channels(model, state))
    return "; ".join(filter(None, parts))


def _other_channels(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Where the first conv of `state` takes another number of channels than the model, which
    the dataset sets: said in words, for the shapes alone ([16, 1, 3, 3] vs [16, 3, 3, 3]) did
    not tell a user with grey-scale weights that their class folders are read as RGB."""
    first = _first_conv(model)
    theirs = state.get(f"{first[0]}.weight") if first is not None else None
    if first is None or not isinstance(theirs, torch.Tensor) or theirs.ndim != 4:
        return ""
    file, mine = int(theirs.shape[1]), int(first[1].weight.shape[1])
    if file == mine:
        return ""
    return (f"the file's first layer takes {file} channel{'' if file == 1 else 's'} and the "
            f"model, made for its dataset, {mine}: the weights were trained on images of another "
            "channel count (an imagefolder dataset is always read as RGB, 3 channels)")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f", ... ({len(names) - SHOWN} more)"
                                       if len(names) > SHOWN else "")


def _plain(err: BaseException) -> str:
    """The first line of an error, without terminal escape codes."""
    text = _ANSI.sub("", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__
