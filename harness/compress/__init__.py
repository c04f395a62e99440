"""Compression recipes and exports: what `edgebench build` runs.

`build.build_suite` is the entry point. Techniques register by name in `techniques.TECHNIQUES`
(quantize.py, prune.py, distill.py, lowrank.py); export.py writes ONNX and TFLite and runs them
on the host; train.py is the shared training loop. Kept import-light: importing this package does
not import torch.
"""
