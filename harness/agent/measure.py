"""The measurement protocol: warm-up, a timed loop that ends on a stable sample, and statistics.

Modelled on MLPerf LoadGen, TFLite's benchmark_model and pyperf. Cold start (load, first inference)
is measured by the caller; here we warm up by time AND count, then time each iteration alone with
`perf_counter_ns` until the minimum duration AND minimum iterations are met and the sample is
stable, or until the maximum duration (then the result is flagged unstable, never dropped).

Stable means: split the samples into three consecutive windows; their medians are within
`stability_tolerance` (default 5%) of each other. This catches drift (thermal throttling, a
neighbour process) that a single median hides.

Stdlib + numpy only; Python 3.8 syntax.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

# How often (seconds of timed loop) the stop conditions are checked; the check runs between
# iterations, outside the timer, and is cheap compared with any real model.
CHECK_INTERVAL_S = 0.05


def warm_up(step: Callable[[], Any], warmup_s: float, warmup_min: int,
            clock: Callable[[], int] = time.perf_counter_ns) -> int:
    """Run `step` for at least `warmup_s` seconds and `warmup_min` times; return the count."""
    deadline = clock() + int(warmup_s * 1e9)
    count = 0
    while count < warmup_min or clock() < deadline:
        step()
        count += 1
    return count


def timed_loop(step: Callable[[], Any], settings: dict[str, Any],
               clock: Callable[[], int] = time.perf_counter_ns) -> tuple[list[int], str]:
    """Time `step` once per iteration until the protocol says stop.

    Returns the raw samples (ns) and why the loop stopped: `stable` or `max_duration`.
    """
    min_ns = int(settings["min_duration_s"] * 1e9)
    max_ns = int(settings["max_duration_s"] * 1e9)
    min_iterations = int(settings["min_iterations"])
    tolerance = float(settings["stability_tolerance"])
    check_ns = int(CHECK_INTERVAL_S * 1e9)

    samples: list[int] = []
    append = samples.append
    start = clock()
    next_check = start
    while True:
        t0 = clock()
        step()
        t1 = clock()
        append(t1 - t0)
        if t1 < next_check:
            continue
        next_check = t1 + check_ns
        elapsed = t1 - start
        if elapsed >= max_ns:
            return samples, "max_duration"
        if (elapsed >= min_ns and len(samples) >= min_iterations
                and is_stable(samples, tolerance)):
            return samples, "stable"


def window_medians(samples: list[int], windows: int = 3) -> list[float]:
    arr = np.asarray(samples, dtype=np.float64)
    return [float(np.median(part)) for part in np.array_split(arr, windows)]


def is_stable(samples: list[int], tolerance: float = 0.05, windows: int = 3) -> bool:
    """True when the medians of `windows` consecutive windows agree within `tolerance`."""
    if len(samples) < 3 * windows:
        return False
    medians = window_medians(samples, windows)
    low = min(medians)
    if low <= 0:
        return False
    return (max(medians) - low) / low <= tolerance


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """1-based ranks (lo, hi) of the order statistics that bracket the median.

    Distribution-free: the number of samples below the true median is Binomial(n, 1/2), so
    [x_(lo), x_(hi)] covers it with probability 1 - 2 * P(B <= lo - 1) >= `confidence`.
    The widest `lo` that keeps that coverage is chosen (the textbook interval; for n = 100 it is
    the 40th and 61st values).
    """
    if n < 1:
        raise ValueError("need at least one sample")
    alpha = (1.0 - confidence) / 2.0
    # cumulative P(B <= k) built from log-pmfs, so it is exact and cheap for large n
    log_half_n = n * math.log(0.5)
    lgn = math.lgamma(n + 1)
    cdf = 0.0
    lo = 0  # P(B <= lo - 1) <= alpha holds for lo = 0 trivially (empty sum)
    for k in range(0, n // 2 + 1):
        cdf += math.exp(lgn - math.lgamma(k + 1) - math.lgamma(n - k + 1) + log_half_n)
        if cdf <= alpha:
            lo = k + 1
        else:
            break
    if lo == 0:
        # too few samples for the confidence asked: the whole range is the interval
        return 1, n
    return lo, n - lo + 1


def statistics(samples_ns: list[int], confidence: float = 0.95) -> dict[str, Any] | None:
    """All the figures of the result record, in milliseconds, from raw nanosecond samples."""
    if not samples_ns:
        return None
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    n = int(ms.size)
    ordered = np.sort(ms)
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if n > 1 else 0.0
    lo, hi = median_ci_ranks(n, confidence)
    p90, p95, p99 = (float(v) for v in np.percentile(ms, [90, 95, 99]))
    total_s = float(ms.sum()) / 1e3
    return {
        "n": n,
        "median_ms": float(np.median(ms)),
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": float(ordered[0]),
        "max_ms": float(ordered[-1]),
        "p90_ms": p90,
        "p95_ms": p95,
        "p99_ms": p99,
        "cov": std / mean if mean > 0 else None,
        "ci95_low_ms": float(ordered[lo - 1]),
        "ci95_high_ms": float(ordered[hi - 1]),
        "throughput_ips": n / total_s if total_s > 0 else None,
    }


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float | None:
    """Fraction of rows whose label is among the k largest logits; None when k > classes."""
    if logits.ndim != 2 or logits.shape[1] < k:
        return None
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels.reshape(-1, 1), axis=1)))
