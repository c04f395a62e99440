"""Compression recipes and exports: what `edgebench build` runs.

`build.build_suite` is the entry point; `suite.py` reads the suite files it builds. Techniques
register by name in `techniques.TECHNIQUES` (quantize.py, prune.py, distill.py, lowrank.py);
export.py writes ONNX and TFLite and runs them on the host; train.py is the shared training loop.
Kept import-light: importing this package does not import torch, and changes nothing in the
process.
"""

from __future__ import annotations

import os


def quiet_litert_logs() -> None:
    """Keep the LiteRT converter's native INFO lines out of the user's progress display.

    The converter logs one per export ("Estimated count of arithmetic ops") through TensorFlow's
    C++ logging, which reads TF_CPP_MIN_LOG_LEVEL when it first logs: call this before the first
    conversion. Warnings and errors still come through; a value the user set wins.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
