"""Accuracy of a model's logits: the one scoring function that host and device both call.

The device agent scores the session it just timed with `score`; the host (`edgebench build`)
scores the exported file, run in the same runtime classes, with the same `score`, so that "host
equals device" compares two machines, not two implementations. stdlib + numpy, Python 3.8 syntax.

Tie rule (top-k, k >= 1). For one row, let `above` be the number of classes whose logit is
strictly greater than the label's and `level` the number of *other* classes whose logit equals it.

- hit:  above + level < k. The label and everything tied with it fit in the top k, so no tie
  breaking can push it out (a tie that does not matter is a hit).
- tie:  above < k <= above + level. Whether the label is in the top k depends on how the tied
  classes are ordered (argmax, argsort and argpartition each order them differently), so it
  counts as a miss and is counted in `top{k}_ties`.
- miss: above >= k.

A row with a NaN anywhere among its logits is a miss (and not a tie): a model that outputs NaN
has not ranked anything. With k at or above the number of classes every finite row is a hit, so
`score` reports top-k as None there rather than a 1.0 that says nothing.

Top-1 agreement with reference logits uses the same rule: the reference's top-1 class must be its
unique maximum, and also the unique maximum of the model's logits; a tie on either side counts as
a disagreement and in `ref_top1_ties`.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

TOPK = (1, 5)


def logits_of(runtime: Any, inputs: np.ndarray) -> np.ndarray:
    """Run every row of `inputs` through a loaded runtime (`set_input`, `run`, `output`), one at
    a time as the artifacts are batch 1; (rows, classes) float32."""
    rows = []
    for i in range(len(inputs)):
        runtime.set_input(inputs[i:i + 1].astype(np.float32))
        runtime.run()
        rows.append(runtime.output().reshape(1, -1))
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(rows, axis=0)


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (hit, tie) boolean arrays under the module's tie rule; a tie is not a hit."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    logits = np.asarray(logits)
    labels = _labels(labels, logits)
    label_logit = logits[np.arange(len(labels)), labels][:, None]
    above = np.sum(logits > label_logit, axis=1)
    level = np.sum(logits == label_logit, axis=1) - 1  # the label equals itself
    valid = ~np.isnan(logits).any(axis=1)
    hit = valid & (above + level < k)
    tie = valid & (above < k) & ~hit
    return hit, tie


def wilson_interval(successes: int, n: int, confidence: float = 0.95
                    ) -> tuple[float | None, float | None]:
    """Wilson score interval for a binomial proportion; (None, None) when n is 0.

    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps its width at 0 or n
    successes, which is where a good model's top-5 sits."""
    if n <= 0:
        return None, None
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} outside 0..{n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    # At 0 or n successes the bound is exactly 0 or 1; the subtraction leaves float noise.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def parity(logits: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Agreement of `logits` with `reference` logits of the same rows: `top1_agreement` (the
    module's tie rule), `top1_ties` (rows where a tie decided it) and `max_abs_diff`."""
    logits = np.asarray(logits, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if reference.shape != logits.shape:
        raise ValueError(f"reference logits have shape {list(reference.shape)}, "
                         f"model gives {list(logits.shape)}")
    n = len(logits)
    if n == 0:
        return {"top1_agreement": None, "top1_ties": 0, "max_abs_diff": None}
    top = np.argmax(reference, axis=1)
    ref_unique, ref_tie = topk_hits(reference, top, 1)
    own_unique, own_tie = topk_hits(logits, top, 1)
    return {
        "top1_agreement": float(np.mean(ref_unique & own_unique)),
        "top1_ties": int(np.sum(ref_tie | own_tie)),
        "max_abs_diff": float(np.max(np.abs(reference - logits))),
    }


def score(logits: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None
          ) -> dict[str, Any]:
    """Top-1/top-5 with Wilson 95% intervals and tie counts, and agreement with `reference`.

    Keys: n; for k in 1, 5: top{k}, top{k}_low, top{k}_high (None when k >= classes or n is 0),
    top{k}_ties; ref_top1_agreement, ref_top1_ties, ref_max_abs_diff (None without a
    reference). ValueError for labels or reference that do not fit the logits."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (rows, classes), got shape {list(logits.shape)}")
    labels = _labels(labels, logits)
    n = int(len(labels))
    out: dict[str, Any] = {"n": n}
    for k in TOPK:
        hit, tie = topk_hits(logits, labels, k)
        hits = int(np.sum(hit))
        meaningful = n > 0 and k < logits.shape[1]
        low, high = wilson_interval(hits, n) if meaningful else (None, None)
        out[f"top{k}"] = hits / n if meaningful else None
        out[f"top{k}_low"] = low
        out[f"top{k}_high"] = high
        out[f"top{k}_ties"] = int(np.sum(tie))
    out["ref_top1_agreement"] = None
    out["ref_top1_ties"] = None
    out["ref_max_abs_diff"] = None
    if reference is not None:
        agree = parity(logits, reference)
        out["ref_top1_agreement"] = agree["top1_agreement"]
        out["ref_top1_ties"] = agree["top1_ties"]
        out["ref_max_abs_diff"] = agree["max_abs_diff"]
    return out


def _labels(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Labels as int64 class indices, checked against the logits they score."""
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"{list(labels.shape)} labels for logits of shape {list(logits.shape)}")
    integral = labels.dtype.kind in "iu" or (
        labels.dtype.kind == "f" and bool(np.all(labels == np.round(labels))))
    if not integral:
        raise ValueError(f"labels must be class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must be class indices in 0..{logits.shape[1] - 1}, "
                         f"got {int(labels.min())}..{int(labels.max())}")
    return labels
