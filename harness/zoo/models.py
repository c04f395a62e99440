"""Model builders by name: small CNNs for the offline demo and the torchvision classifiers.

Every builder takes the number of classes and the input channel count and returns an `nn.Module`
in eval mode. Weights come only from a local file (`load_weights`): edgebench never downloads, so
a model without a weights file has random weights and is good for latency only, unless the suite
trains it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    family: str  # "demo" | "torchvision"
    # The only input side the model takes (a fully connected head sized for it); a suite that
    # feeds it another is refused when it is loaded. False: any size (adaptive pooling).
    fixed_input_size: bool = False


MODELS: Registry[ModelSpec] = Registry("model")


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


def _adapt_stem(model: nn.Module, in_channels: int) -> nn.Module:
    if in_channels == 3:
        return model
    # Grey-scale inputs: replace the first conv, keeping its geometry.
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
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


def _torchvision(name: str) -> None:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        return _adapt_stem(tvm.get_model(name, weights=None, num_classes=num_classes), in_channels)

    MODELS.add(name, ModelSpec(name, build, input_size=224, family="torchvision"))


for _name in TORCHVISION:
    _torchvision(_name)


def build_model(
    arch: str, num_classes: int, in_channels: int = 3, weights: Path | None = None
) -> nn.Module:
    """Build `arch` (a registered name); load `weights` from a local file when given."""
    spec = MODELS.get(arch)
    model = spec.build(num_classes, in_channels)
    if weights is not None:
        load_weights(model, Path(weights), arch)
    return model.eval()


def _drop_other_classifier(model: nn.Module, state: dict) -> dict:
    """Fine-tuning from weights trained for another number of classes (ImageNet -> Pets): keep
    everything but the last layer, which stays freshly initialised."""
    own = model.state_dict()
    last = [name for name, p in model.named_parameters()][-2:]
    differs = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if differs and set(differs) <= set(last):
        state = {k: v for k, v in state.items() if k not in differs}
        state.update({k: own[k] for k in differs})
    return state


def load_weights(model: nn.Module, path: Path, arch: str) -> None:
    if not path.is_file():
        raise EdgebenchError(f"{arch}: weights file {path} not found (edgebench never downloads)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors all mean an unreadable file
        raise EdgebenchError(f"{arch}: cannot read weights file {path}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = _drop_other_classifier(model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise EdgebenchError(
            f"{arch}: weights file {path} does not fit the model: {first}") from err
