"""Training on the host: the loop behind baseline training, fine-tuning and distillation.

Small and deterministic on purpose: seeded shuffling, Adam, cross-entropy (optionally blended with
a teacher's softened logits), one rich progress bar per run of epochs. It is CPU-sized for the
demo; the same loop runs on a GPU when torch sees one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from harness.compress.techniques import ParamError, in_range, learning_rate, positive_int
from harness.signals import raise_if_interrupted
from harness.zoo.datasets import DataSplit


def _epochs(params: dict[str, Any], key: str) -> None:
    positive_int(params, key, allow_zero=True)


def _weight_decay(params: dict[str, Any], key: str) -> None:
    in_range(params, key, 0.0, 1.0)


# A suite model's `train:` settings, each with its check: what `fit` (and the build, for epochs)
# reads, and what the suite loader checks a suite's values by (suite.py).
TRAIN_SETTINGS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "epochs": _epochs,
    "lr": learning_rate,
    "batch_size": positive_int,
    "weight_decay": _weight_decay,
    "threads": positive_int,
}


# What `fit` uses where a model's `train:` does not say; with the optimizer and schedule, what a
# manifest records of the fp32 baseline's training (`training_record`).
TRAIN_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "batch_size": 64, "weight_decay": 0.0}
OPTIMIZER, SCHEDULE = "adam", "cosine"


def training_record(train: dict[str, Any]) -> dict[str, Any]:
    """The settings a baseline was trained with, as `fit` applies them ({"epochs": 0}: it was
    not trained)."""
    epochs = int(train.get("epochs", 0))
    if not epochs:
        return {"epochs": 0}
    return {"epochs": epochs, **{k: train.get(k, v) for k, v in TRAIN_DEFAULTS.items()},
            "optimizer": OPTIMIZER, "schedule": SCHEDULE}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class StepContext:
    """What a technique may use besides the model: data, seed, training defaults, a console."""

    entry: str
    data: DataSplit | None
    input_shape: tuple[int, ...]
    num_classes: int
    seed: int
    train: dict[str, Any] = field(default_factory=dict)
    console: Console = field(default_factory=lambda: Console(stderr=True))

    def require_data(self, what: str) -> DataSplit:
        if self.data is None:
            raise ParamError(f"{what} needs a dataset; this model has none (latency only), "
                             "so set its epochs to 0")
        return self.data

    def calibration(self, n: int) -> np.ndarray:
        """`n` inputs for calibration: training images, or seeded noise for latency-only models."""
        if self.data is not None:
            rng = np.random.default_rng(self.seed)
            idx = rng.choice(len(self.data.x_train), min(n, len(self.data.x_train)), replace=False)
            return self.data.x_train[np.sort(idx)]
        rng = np.random.default_rng(self.seed)
        return rng.standard_normal((n, *self.input_shape[1:])).astype(np.float32)

    def setting(self, key: str) -> Any:
        """A training setting as `fit` applies it: the model's `train:`, else the default."""
        return self.train.get(key, TRAIN_DEFAULTS.get(key))

    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def progress(console: Console, description: str, total: int) -> Iterator[Callable[..., None]]:
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                   console=console, transient=False)
    with bar:
        task = bar.add_task(description, total=total, status="")

        def advance(status: str = "") -> None:
            bar.update(task, advance=1, status=status)

        yield advance


def fit(
    model: nn.Module,
    ctx: StepContext,
    *,
    epochs: int,
    description: str,
    lr: float | None = None,
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    alpha: float = 0.0,
) -> nn.Module:
    """Train `model` in place on the context's training split for `epochs` epochs.

    With a teacher, the loss is `alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * CE`
    (Hinton et al.'s logit distillation).
    """
    if epochs == 0:
        return model
    data = ctx.require_data(description)
    lr = float(lr if lr is not None else ctx.setting("lr"))
    batch = int(ctx.setting("batch_size"))
    device = ctx.device()
    threads = torch.get_num_threads()
    # Tiny models train faster on one thread than on cores shared with anything else.
    torch.set_num_threads(int(ctx.train.get("threads") or threads))
    try:
        return _fit(model, ctx, data, epochs, description, lr, batch, device, teacher,
                    temperature, alpha)
    finally:
        torch.set_num_threads(threads)


def _fit(model: nn.Module, ctx: StepContext, data: DataSplit, epochs: int, description: str,
         lr: float, batch: int, device: torch.device, teacher: nn.Module | None,
         temperature: float, alpha: float) -> nn.Module:
    seed_everything(ctx.seed)
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    opt = torch.optim.Adam(model.parameters(), lr=lr,
                           weight_decay=float(ctx.setting("weight_decay")))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    x_all = torch.from_numpy(data.x_train)
    y_all = torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(ctx.seed)
    with progress(ctx.console, f"{ctx.entry}: {description}", epochs) as advance:
        for _ in range(epochs):
            raise_if_interrupted()  # a Ctrl-C that Python lost in a gc callback
            order = torch.randperm(len(y_all), generator=gen)
            total, seen = 0.0, 0
            for start in range(0, len(order), batch):
                idx = order[start:start + batch]
                x, y = x_all[idx].to(device), y_all[idx].to(device)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                if teacher is not None and alpha > 0:
                    with torch.no_grad():
                        soft = F.log_softmax(teacher(x) / temperature, dim=1)
                    kd = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft,
                                  reduction="batchmean", log_target=True)
                    loss = alpha * temperature**2 * kd + (1 - alpha) * loss
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            sched.step()
            advance(f"loss {total / seen:.3f}")
    return model.cpu().eval()


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    model.eval()
    outs = [model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float32)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass, counted as torchvision's model docs count them
    (torch's FlopCounterMode counts a multiply-add as 2 FLOPs; a MAC is one)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_shape))
    return int(counter.get_total_flops() // 2)
