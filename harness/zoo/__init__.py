"""Model builders and datasets, registered by name (see `models.MODELS`, `datasets.DATASETS`)."""

from __future__ import annotations

from harness.zoo.datasets import DATASETS, DataSplit, load_dataset
from harness.zoo.models import MODELS, ModelSpec, build_model

__all__ = ["DATASETS", "MODELS", "DataSplit", "ModelSpec", "build_model", "load_dataset"]
