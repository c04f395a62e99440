"""edgebench: benchmark compressed computer-vision models on the edge devices they ship on."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

__version__ = "0.1.0"

# The environment this process was started with, before anything it imports adds to it: the
# environment a local device's agents get (transport/local.py), so that they run alike after
# `bench --suite`, which builds in this process first, and `bench --model`, which does not. A
# build leaves torch's, TensorFlow's and LiteRT's variables behind (KMP_DUPLICATE_LIB_OK,
# TF_CPP_MIN_LOG_LEVEL, TORCHINDUCTOR_CACHE_DIR; three more after an export), and a process's
# environment shifts its early heap, on which glibc's reuse of the memory freed after a model
# load depends: ResNet18 in ONNX Runtime peaked at 197.4 or 217.7 MiB as those three variables
# were there or not (at 4 of 12 sizes of the rest of the environment tried).
LAUNCH_ENVIRONMENT: Mapping[str, str] = MappingProxyType(dict(os.environ))
