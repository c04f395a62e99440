"""Compression recipes and exports: what `edgebench build` runs.

`build.build_suite` is the entry point. Techniques register by name in `techniques.TECHNIQUES`
(quantize.py, prune.py, distill.py, lowrank.py); export.py writes ONNX and TFLite and runs them
on the host; train.py is the shared training loop. Kept import-light: importing this package does
not import torch.
"""

from __future__ import annotations

import os

# The LiteRT converter logs an INFO line per export ("Estimated count of arithmetic ops") from
# native code, straight into the user's progress display; warnings and errors still come through.
# A value the user set wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
